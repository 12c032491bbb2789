"""The component manifest, ``components/<name>/component.yaml`` (reference: docs/manifest.md).

``load_component(folder)`` reads and validates it into a frozen
``ComponentManifest``; every fault is a one-line ``ValidationError`` such as
``components/hello/component.yaml: trigers: unknown key; did you mean 'triggers'?``.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ValidationError
from edge.model import topics
from edge.model._reader import Section, did_you_mean, load_yaml, show

__all__ = [
    "DEFAULT_ERRORS_TOPIC",
    "DEFAULT_S3_PREFIX",
    "ENCODINGS",
    "LANGUAGES",
    "MANIFEST_NAMES",
    "PREFIX_PLACEHOLDERS",
    "QUEUE_FULL_POLICIES",
    "TOPIC_PLACEHOLDERS",
    "ComponentManifest",
    "DynamoDBResults",
    "Limits",
    "Output",
    "Results",
    "S3Results",
    "Trigger",
    "load_component",
    "parse_component",
]

LANGUAGES: Mapping[str, str] = types.MappingProxyType(
    {
        "python3.11": "python",
        "python3.12": "python",
        "python3.13": "python",
        "nodejs18.x": "nodejs",
        "nodejs20.x": "nodejs",
        "nodejs22.x": "nodejs",
    }
)
ENCODINGS = ("json", "binary")
QUEUE_FULL_POLICIES = ("reject", "drop-oldest")
TOPIC_PLACEHOLDERS = ("thing", "component")
PREFIX_PLACEHOLDERS = ("thing", "component", "date", "hour")
DEFAULT_ERRORS_TOPIC = "edge/{thing}/{component}/errors"
DEFAULT_S3_PREFIX = "{component}/{thing}/"
S3_LAYOUTS = ("ndjson", "object")
MANIFEST_NAMES = ("component.yaml", "component.yml")

# Greengrass's own rules for component names and versions (match with ``fullmatch``);
# the recipe validator in edge.build uses the same ones.
COMPONENT_NAME_RE = re.compile(r"[a-zA-Z0-9\-_.]+")
COMPONENT_NAME_MAX = 128
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_PY_HANDLER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\.[A-Za-z_]\w*", re.ASCII)
_JS_HANDLER = re.compile(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*\.[A-Za-z_$][\w$]*", re.ASCII)
_JS_SUFFIXES = (".js", ".mjs", ".cjs")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")
_TABLE = re.compile(r"[a-zA-Z0-9_.\-]{3,255}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TOP_KEYS = (
    "name",
    "version",
    "description",
    "runtime",
    "handler",
    "triggers",
    "outputs",
    "results",
    "limits",
    "environment",
    "errors",
    "health",
)


@dataclass(frozen=True)
class Trigger:
    """A local MQTT subscription that invokes the function (``topic`` may use + and #)."""

    topic: str
    encoding: str = "json"  # "json" | "binary"


@dataclass(frozen=True)
class Output:
    """A topic the function publishes its results to (no wildcards)."""

    topic: str


@dataclass(frozen=True)
class S3Results:
    bucket: str
    prefix: str = DEFAULT_S3_PREFIX
    layout: str = "ndjson"  # "ndjson": JSON results batched per object | "object": one each


@dataclass(frozen=True)
class DynamoDBResults:
    table: str
    partition_key: str = "pk"
    sort_key: str = "sk"
    conditional: bool = False  # first write wins (attribute_not_exists), one PutItem each
    import_bucket: str | None = None  # where import files go when there is no DynamoDB


@dataclass(frozen=True)
class Results:
    s3: S3Results | None = None
    dynamodb: DynamoDBResults | None = None


@dataclass(frozen=True)
class Limits:
    """Named after the Greengrass Lambda parameters, with their defaults."""

    timeout: float = 3.0
    memory_mb: int = 128
    max_instances: int = 100
    max_queue: int = 1000
    pinned: bool = True
    idle_timeout: float = 60.0
    queue_full: str = "reject"  # "reject" | "drop-oldest"


@dataclass(frozen=True)
class Health:
    """The direct backend's health gate for a new version (docs/deploy.md).

    ``smoke_event``: a sample event (a file in the component folder, often under
    ``events/``) run through the new version before it is switched in;
    ``smoke_topic``: the topic it appears to arrive on (default: the first
    trigger with its wildcards filled in with ``smoke``); ``window``: how long
    the new version must run without a failed invocation (default: 10 s, or
    ``edgectl deploy --health-window``).
    """

    smoke_event: Path | None = None
    smoke_topic: str | None = None
    window: float | None = None


@dataclass(frozen=True)
class ComponentManifest:
    name: str
    version: str
    runtime: str
    handler: str
    triggers: tuple[Trigger, ...]
    outputs: tuple[Output, ...]
    results: Results
    limits: Limits
    environment: Mapping[str, str]
    errors_topic: str
    path: Path
    source: str
    description: str = ""
    health: Health = Health()

    @property
    def language(self) -> str:
        """``"python"`` or ``"nodejs"``."""
        return LANGUAGES[self.runtime]

    @property
    def handler_module(self) -> str:
        """``"app"`` for ``app.handler``, ``"pkg.mod"`` for ``pkg.mod.handler``.

        In Node.js it is the file path without its suffix: ``"index"``, ``"src/index"``.
        """
        return self.handler.rpartition(".")[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rpartition(".")[2]


def load_component(folder: Path | str) -> ComponentManifest:
    """Read and validate ``<folder>/component.yaml`` (or ``component.yml``)."""
    folder_path = Path(folder)
    candidates = [folder_path / name for name in MANIFEST_NAMES]
    present = [path for path in candidates if path.is_file()]
    if len(present) > 1:
        raise ValidationError(
            f"both {MANIFEST_NAMES[0]} and {MANIFEST_NAMES[1]} exist; keep one",
            source=str(folder_path),
        )
    if not present:
        if not folder_path.is_dir():
            raise ValidationError("no such component folder", source=str(folder_path))
        raise ValidationError("file not found", source=str(candidates[0]))
    manifest_path = present[0]
    source = str(manifest_path)
    data = load_yaml(manifest_path, source=source)
    return parse_component(data, source=source, folder=folder_path.resolve())


def parse_component(data: object, *, source: str, folder: Path) -> ComponentManifest:
    """Validate the parsed YAML ``data`` of a manifest; ``folder`` holds the component's code."""
    folder = folder.resolve()
    doc = Section.of(data, source=source, field="", keys=_TOP_KEYS)

    name = doc.string("name")
    if not COMPONENT_NAME_RE.fullmatch(name) or len(name) > COMPONENT_NAME_MAX:
        doc.fail(
            "name",
            f"{show(name)} is not a component name "
            f"(up to {COMPONENT_NAME_MAX} letters, digits, '-', '_', '.')",
            name,
        )
    version = _version(doc)
    runtime = _runtime(doc)
    handler = _handler(doc, LANGUAGES[runtime], folder)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        doc.fail("description", f"{show(description)} is not a string", description)

    triggers = _triggers(doc)
    outputs = tuple(Output(topic) for topic in _topic_list(doc, "outputs"))
    errors_topic = DEFAULT_ERRORS_TOPIC
    errors = doc.section("errors", ("topic",))
    if errors is not None:
        errors_topic = _topic(errors, "topic", filter_=False, default=DEFAULT_ERRORS_TOPIC)

    return ComponentManifest(
        name=name,
        version=version,
        runtime=runtime,
        handler=handler,
        triggers=triggers,
        outputs=outputs,
        results=_results(doc),
        limits=_limits(doc),
        environment=types.MappingProxyType(_environment(doc)),
        errors_topic=errors_topic,
        path=folder,
        source=source,
        description=description or "",
        health=_health(doc, folder),
    )


def _health(doc: Section, folder: Path) -> Health:
    section = doc.section("health", ("smoke_event", "smoke_topic", "window"))
    if section is None:
        return Health()
    # Not required to exist here: ``events/`` is not packaged, so a deployed copy of the
    # manifest has none; ``edgectl deploy`` reads it (and fails when it is missing).
    event = section.path("smoke_event", folder)
    if event is not None and not event.resolve().is_relative_to(folder):
        section.fail("smoke_event", f"{show(section.get('smoke_event'))} is outside {folder}")
    topic = None
    if section.has("smoke_topic"):
        topic = _topic(section, "smoke_topic", filter_=False)
    window = section.duration("window", 0.0, positive=False) if section.has("window") else None
    return Health(smoke_event=event, smoke_topic=topic, window=window)


def _version(doc: Section) -> str:
    value = doc.required("version")
    if not isinstance(value, str) or not (value == "NEXT_PATCH" or SEMVER_RE.fullmatch(value)):
        doc.fail(
            "version",
            f"{show(value)} is not a semantic version (MAJOR.MINOR.PATCH) or NEXT_PATCH",
            value,
        )
    return value


def _runtime(doc: Section) -> str:
    value = doc.string("runtime")
    if value not in LANGUAGES:
        hint = did_you_mean(value, LANGUAGES)
        doc.fail(
            "runtime",
            f"{show(value)} is not a supported runtime{hint} (supported: {', '.join(LANGUAGES)})",
            value,
        )
    return value


def _handler(doc: Section, language: str, folder: Path) -> str:
    value = doc.string("handler")
    pattern = _PY_HANDLER if language == "python" else _JS_HANDLER
    if not pattern.fullmatch(value):
        example = "app.handler or pkg.module.handler" if language == "python" else "index.handler"
        doc.fail("handler", f"{show(value)} is not module.function (e.g. {example})", value)
    module = value.rpartition(".")[0]
    if language == "python":
        base = Path(*module.split("."))
        candidates = [base.with_suffix(".py"), base / "__init__.py"]
    else:
        base = Path(module)
        candidates = [base.with_suffix(suffix) for suffix in _JS_SUFFIXES]
    if not any((folder / candidate).is_file() for candidate in candidates):
        names = " or ".join(candidate.as_posix() for candidate in candidates)
        doc.fail("handler", f"{show(value)} needs {names} in {folder}, and none exists", value)
    return value


def _topic(section: Section, key: str, *, filter_: bool, default: str | None = None) -> str:
    """The topic template at ``key``: a filter (triggers) or a name (outputs, errors)."""
    topic = section.string(key, default)
    try:
        if filter_:
            topics.validate_filter(topic)
        elif "+" in topic or "#" in topic:
            section.fail(
                key,
                f"{show(topic)} may not contain MQTT wildcards (+ or #); only triggers may",
                topic,
            )
        else:
            topics.validate_name(topic)
        topics.check_template(topic, TOPIC_PLACEHOLDERS)
    except ValueError as exc:
        section.fail(key, f"{show(topic)}: {exc}", topic)
    return topic


def _items_section(doc: Section, key: str, keys: tuple[str, ...]) -> list[Section]:
    sections = []
    for field, item in doc.items(key):
        sections.append(Section.of(item, source=doc.source, field=field, keys=keys))
    return sections


def _triggers(doc: Section) -> tuple[Trigger, ...]:
    triggers: list[Trigger] = []
    for item in _items_section(doc, "triggers", ("topic", "encoding")):
        topic = _topic(item, "topic", filter_=True)
        if any(trigger.topic == topic for trigger in triggers):
            item.fail("topic", f"{show(topic)} is already a trigger", topic)
        encoding = item.choice("encoding", ENCODINGS, default="json")
        triggers.append(Trigger(topic=topic, encoding=encoding))
    return tuple(triggers)


def _topic_list(doc: Section, key: str) -> list[str]:
    result: list[str] = []
    for item in _items_section(doc, key, ("topic",)):
        topic = _topic(item, "topic", filter_=False)
        if topic in result:
            item.fail("topic", f"{show(topic)} is listed twice", topic)
        result.append(topic)
    return result


def _results(doc: Section) -> Results:
    results = doc.section("results", ("s3", "dynamodb"))
    if results is None:
        return Results()
    s3 = None
    s3_section = results.section("s3", ("bucket", "prefix", "layout"))
    if s3_section is not None:
        bucket = _bucket(s3_section, "bucket")
        prefix = s3_section.string("prefix", DEFAULT_S3_PREFIX)
        try:
            topics.check_template(prefix, PREFIX_PLACEHOLDERS)
        except ValueError as exc:
            s3_section.fail("prefix", f"{show(prefix)}: {exc}", prefix)
        layout = s3_section.choice("layout", S3_LAYOUTS, default="ndjson")
        s3 = S3Results(bucket=bucket, prefix=prefix, layout=layout)
    dynamodb = None
    table_section = results.section(
        "dynamodb", ("table", "partition_key", "sort_key", "conditional", "import_bucket")
    )
    if table_section is not None:
        table = table_section.matching(
            "table", _TABLE, "a DynamoDB table name (3-255 letters, digits, '_', '.', '-')"
        )
        partition_key = table_section.string("partition_key", "pk")
        sort_key = table_section.string("sort_key", "sk")
        if partition_key == sort_key:
            table_section.fail("sort_key", f"{show(sort_key)} is also the partition_key", sort_key)
        dynamodb = DynamoDBResults(
            table=table,
            partition_key=partition_key,
            sort_key=sort_key,
            conditional=table_section.boolean("conditional", False),
            import_bucket=(
                _bucket(table_section, "import_bucket") if table_section.has("import_bucket")
                else None
            ),
        )
    return Results(s3=s3, dynamodb=dynamodb)


def _bucket(section: Section, key: str) -> str:
    bucket = section.string(key)
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP.fullmatch(bucket):
        section.fail(
            key,
            f"{show(bucket)} is not an S3 bucket name "
            "(3-63 lowercase letters, digits, '.', '-'; "
            "starting and ending with a letter or digit)",
            bucket,
        )
    return bucket


def _limits(doc: Section) -> Limits:
    section = doc.section(
        "limits",
        (
            "timeout",
            "memory_mb",
            "max_instances",
            "max_queue",
            "pinned",
            "idle_timeout",
            "queue_full",
        ),
    )
    if section is None:
        return Limits()
    default = Limits()
    return Limits(
        timeout=section.duration("timeout", default.timeout),
        memory_mb=section.integer("memory_mb", default.memory_mb),
        max_instances=section.integer("max_instances", default.max_instances),
        max_queue=section.integer("max_queue", default.max_queue),
        pinned=section.boolean("pinned", default.pinned),
        idle_timeout=section.duration("idle_timeout", default.idle_timeout),
        queue_full=section.choice("queue_full", QUEUE_FULL_POLICIES, default=default.queue_full),
    )


def _environment(doc: Section) -> dict[str, str]:
    environment = doc.string_map("environment")
    for name in environment:
        if not _ENV_NAME.fullmatch(name):
            doc.fail(
                "environment",
                f"{show(name)} is not an environment variable name (letters, digits, '_')",
                name,
            )
    return environment
