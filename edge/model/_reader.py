"""A strict reader for YAML documents, shared by the component manifest and the device inventory.

Every key must be known (an unknown one is an error, with a did-you-mean when
one is close), and every typed getter reports a fault as one line:
``<source>: <dotted.field[index]>: <message with the bad value>``.
A key whose value is null (``key:`` with nothing after it) counts as absent.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from edge.errors import ValidationError
from edge.model.durations import parse_duration, parse_size

__all__ = ["Section", "did_you_mean", "join", "load_yaml", "show"]

_MAX_REPR = 80


def show(value: object) -> str:
    """``repr(value)``, cut short so that an error stays on one line."""
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return text.replace("\n", "\\n")


def join(parent: str, key: str | int) -> str:
    """The dotted field name of ``key`` under ``parent``: ``a.b``, ``a[0]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """``"; did you mean 'x'?"`` when a choice is close to ``word``, else ``""``.

    Closeness is ``difflib``'s ratio (at least 0.6, as ``get_close_matches``);
    ties go to the choice listed first.
    """
    best, best_score = "", 0.6
    for choice in choices:
        matcher = difflib.SequenceMatcher(None, word, choice)
        score = matcher.ratio()
        if score > best_score or (score == best_score and not best):
            best, best_score = choice, score
    return f"; did you mean {best!r}?" if best else ""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that rejects duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(path: Path, *, source: str) -> object:
    """Parse the YAML at ``path``; a syntax error is one line naming ``source`` and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError("file not found", source=source) from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not UTF-8 text ({exc.reason})", source=source) from None
    except OSError as exc:
        raise ValidationError(f"cannot read ({exc.strerror})", source=source) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ValidationError(f"{where}invalid YAML: {problem}", source=source) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {exc}".replace("\n", " "), source=source) from None


class Section:
    """One mapping of a document, read strictly.

    ``Section.of`` checks that ``data`` is a mapping with string keys, all of
    them in ``keys``; the getters then read values by key, apply defaults and
    raise ``ValidationError`` naming ``source`` and the dotted field.
    """

    def __init__(self, data: Mapping[str, object], *, source: str, field: str) -> None:
        self.data = data
        self.source = source
        self.field = field

    @classmethod
    def of(cls, data: object, *, source: str, field: str, keys: Collection[str]) -> Section:
        if not isinstance(data, Mapping):
            what = "the document" if not field else "the value"
            got = "nothing" if data is None else f"{type(data).__name__} {show(data)}"
            raise ValidationError(
                f"{what} must be a mapping of keys to values, got {got}",
                source=source,
                field=field or None,
                value=data,
            )
        for key in data:
            if not isinstance(key, str):
                raise ValidationError(
                    f"key {show(key)} is not a string",
                    source=source,
                    field=field or None,
                    value=key,
                )
            if key not in keys:
                hint = did_you_mean(key, keys) or f" (expected one of: {', '.join(sorted(keys))})"
                raise ValidationError(
                    f"unknown key{hint}",
                    source=source,
                    field=join(field, key),
                    value=key,
                )
        return cls(data, source=source, field=field)

    # -- plumbing -----------------------------------------------------------

    def at(self, key: str | int) -> str:
        """The dotted field name of ``key`` in this section."""
        return join(self.field, key)

    def fail(self, key: str | int, message: str, value: object = None) -> NoReturn:
        raise ValidationError(message, source=self.source, field=self.at(key), value=value)

    def get(self, key: str) -> object:
        """The raw value of ``key``, ``None`` when absent or null."""
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def required(self, key: str) -> object:
        value = self.data.get(key)
        if value is None:
            missing = key not in self.data
            self.fail(key, "required key is missing" if missing else "may not be empty")
        return value

    # -- typed getters ------------------------------------------------------

    def string(self, key: str, default: str | None = None) -> str:
        """A non-empty string; required when ``default`` is ``None``."""
        value = self.required(key) if default is None else self.data.get(key)
        if value is None:
            assert default is not None
            return default
        return self.check_string(key, value)

    def optional_string(self, key: str) -> str | None:
        value = self.data.get(key)
        return None if value is None else self.check_string(key, value)

    def check_string(self, key: str | int, value: object) -> str:
        if not isinstance(value, str):
            self.fail(key, f"{show(value)} is not a string", value)
        if not value:
            self.fail(key, "may not be empty", value)
        return value

    def matching(
        self, key: str, pattern: re.Pattern[str], what: str, default: str | None = None
    ) -> str:
        """A string matching ``pattern``; ``what`` says in words what it must look like."""
        value = self.string(key, default)
        if not pattern.fullmatch(value):
            self.fail(key, f"{show(value)} is not {what}", value)
        return value

    def choice(self, key: str, choices: Sequence[str], default: str | None = None) -> str:
        value = self.string(key, default)
        if value not in choices:
            hint = did_you_mean(value, choices)
            self.fail(key, f"{show(value)} is not one of {', '.join(choices)}{hint}", value)
        return value

    def integer(self, key: str, default: int, *, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            self.fail(key, f"{show(value)} is not {what}", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"{show(value)} is not true or false", value)
        return value

    def duration(self, key: str, default: float, *, positive: bool = True) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        seconds = parse_duration(value, source=self.source, field=self.at(key))
        if positive and seconds <= 0:
            self.fail(key, f"{show(value)} must be greater than zero", value)
        return seconds

    def size(self, key: str, default: int, *, positive: bool = True) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        size = parse_size(value, source=self.source, field=self.at(key))
        if positive and size <= 0:
            self.fail(key, f"{show(value)} must be greater than zero", value)
        return size

    def path(self, key: str, base: Path) -> Path | None:
        """A filesystem path; a relative one is resolved against ``base``, ``~`` is expanded."""
        value = self.optional_string(key)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path

    def section(self, key: str, keys: Collection[str]) -> Section | None:
        """The nested mapping at ``key``, read strictly; ``None`` when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        return Section.of(value, source=self.source, field=self.at(key), keys=keys)

    def required_section(self, key: str, keys: Collection[str]) -> Section:
        """The nested mapping at ``key``, read strictly; absent is an error."""
        return Section.of(self.required(key), source=self.source, field=self.at(key), keys=keys)

    def items(self, key: str) -> Iterator[tuple[str, object]]:
        """``(field, item)`` for each item of the list at ``key`` (none when absent)."""
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.fail(key, f"{show(value)} is not a list", value)
        for index, item in enumerate(value):
            yield self.at(key) + f"[{index}]", item

    def string_list(
        self, key: str, check: Callable[[str, str], None] | None = None
    ) -> tuple[str, ...]:
        """A list of non-empty, distinct strings; ``check(field, item)`` may reject one."""
        result: list[str] = []
        for field, item in self.items(key):
            if not isinstance(item, str) or not item:
                what = "may not be empty" if item == "" else f"{show(item)} is not a string"
                raise ValidationError(what, source=self.source, field=field, value=item)
            if item in result:
                raise ValidationError(
                    f"{show(item)} is listed twice", source=self.source, field=field, value=item
                )
            if check is not None:
                check(field, item)
            result.append(item)
        return tuple(result)

    def string_map(self, key: str) -> dict[str, str]:
        """A mapping of string keys to string values (numbers and booleans are not stringified)."""
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f"{show(value)} is not a mapping", value)
        result: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(name, str):
                self.fail(key, f"key {show(name)} is not a string", name)
            if not isinstance(item, str):
                hint = " (quote it in YAML)" if isinstance(item, bool | int | float) else ""
                raise ValidationError(
                    f"{show(item)} is not a string{hint}",
                    source=self.source,
                    field=join(self.at(key), name),
                    value=item,
                )
            result[name] = item
        return result
