"""``edgectl init`` and ``edgectl generate-event``: a new component, a new event file.

Templates live in ``edge/local/templates/<language>/`` as ``*.tmpl`` files
rendered with ``string.Template`` (``$name``), so the manifests' own
``{thing}`` placeholders need no escaping.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edge.errors import EventError, UsageError
from edge.model.component import LANGUAGES, TOPIC_PLACEHOLDERS, load_component
from edge.model.topics import check_template, validate_filter, validate_name

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.]{0,127}")


@dataclass(frozen=True)
class Scaffold:
    folder: Path
    name: str
    runtime: str
    files: tuple[Path, ...]
    topic: str  # a concrete topic the trigger matches, for invoke --topic and publish

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "name": self.name,
            "runtime": self.runtime,
            "files": [str(f) for f in self.files],
            "topic": self.topic,
        }


def example_topic(topic_filter: str, thing: str = "local") -> str:
    """A topic that ``topic_filter`` matches: ``+`` becomes ``s1``, ``#`` becomes ``demo``."""
    levels = []
    for level in topic_filter.replace("{thing}", thing).split("/"):
        levels.append({"+": "s1", "#": "demo"}.get(level, level))
    return "/".join(levels)


def _slug(name: str) -> str:
    return re.sub(r"\W+", "_", name.rsplit(".", 1)[-1]).strip("_").lower() or "component"


def init_component(
    name: str,
    *,
    runtime: str = "python3.11",
    trigger: str | None = None,
    directory: Path = Path("components"),
    force: bool = False,
) -> Scaffold:
    """Write ``<directory>/<name>/`` from the runtime's templates and validate the result."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"NAME: {name!r} is not a component name (letters, digits, '-', '_', '.'; "
            "at most 128, starting with a letter or digit)"
        )
    if runtime not in LANGUAGES:
        raise UsageError(f"--runtime: {runtime!r} is not one of {', '.join(LANGUAGES)}")
    trigger = trigger or f"sensors/+/{_slug(name)}"
    try:
        validate_filter(trigger)
        check_template(trigger, TOPIC_PLACEHOLDERS)
    except ValueError as exc:
        raise UsageError(f"--trigger: {trigger!r}: {exc}") from None
    folder = directory / name
    if folder.exists() and not force:
        raise UsageError(f"{folder}: already exists; pass --force to write the template over it")
    language = LANGUAGES[runtime]
    slug = _slug(name)
    topic = example_topic(trigger)
    tests_path = str(folder / ("tests" if language == "python" else "test"))
    values = {
        "name": name,
        "runtime": runtime,
        "trigger": trigger,
        "output": f"{slug}/{{thing}}/out",
        "topic": topic,
        "tests_path": tests_path,
    }
    written: list[Path] = []
    base = resources.files("edge.local") / "templates" / language
    for source, relative in _templates(base):
        target = folder / relative.replace("test_handler.py", f"test_{slug}.py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(string.Template(source.read_text()).substitute(values))
        written.append(target)
    load_component(folder)  # what we wrote must validate; a failure here is a bug
    return Scaffold(folder, name, runtime, tuple(sorted(written)), topic)


def _templates(base: Any, prefix: str = "") -> list[tuple[Any, str]]:
    found: list[tuple[Any, str]] = []
    for entry in sorted(base.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _templates(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".tmpl"):
            found.append((entry, prefix + entry.name.removesuffix(".tmpl")))
    return found


def generate_event(topic: str, payload: str) -> bytes:
    """The event file for an MQTT message of ``payload`` (JSON text) on ``topic``.

    The runtime hands a handler the decoded JSON payload as ``event`` (and the
    topic as ``context.client_context.custom["subject"]``), so the file holds
    exactly that payload; ``edgectl invoke --event FILE --topic TOPIC`` replays it.
    """
    try:
        validate_name(topic)
    except ValueError as exc:
        raise UsageError(f"--topic: {topic!r}: {exc}") from None
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise EventError(f"not JSON: {exc}", source="--payload") from None
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
