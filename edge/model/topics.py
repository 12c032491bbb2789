"""MQTT topic rules (MQTT 3.1.1 section 4.7 and 5.0 section 4.7), as pure functions.

- A topic *name* (what is published) has no wildcards.
- A topic *filter* (what is subscribed) may use ``+`` for exactly one level and
  ``#`` for the rest of the topic, including the parent level itself
  (``a/#`` matches ``a``); ``#`` must be last and alone in its level, ``+``
  alone in its level.
- Neither may be empty, contain NUL, or exceed 65535 bytes of UTF-8.
- A filter starting with a wildcard never matches a topic starting with ``$``
  (``$SYS/...``, ``$aws/...``).

Templates (``edge/{thing}/{component}/errors``) are topics with ``{name}``
placeholders; ``render`` fills them in and ``placeholders`` lists them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import Generic, TypeVar

__all__ = [
    "MAX_TOPIC_BYTES",
    "check_template",
    "matches",
    "placeholders",
    "render",
    "validate_filter",
    "validate_name",
]

MAX_TOPIC_BYTES = 65535

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _validate_common(topic: str) -> None:
    if not topic:
        raise ValueError("topic is empty")
    if "\x00" in topic:
        raise ValueError("topic contains a NUL character")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is longer than {MAX_TOPIC_BYTES} bytes of UTF-8")


def validate_filter(topic: str) -> None:
    """Raise ``ValueError`` with the reason when ``topic`` is not a valid subscription filter."""
    _validate_common(topic)
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level:
            if level != "#":
                raise ValueError("'#' must be alone in its level")
            if index != len(levels) - 1:
                raise ValueError("'#' must be the last level")
        if "+" in level and level != "+":
            raise ValueError("'+' must be alone in its level")


def validate_name(topic: str) -> None:
    """Raise ``ValueError`` with the reason when ``topic`` is not a valid topic to publish to."""
    _validate_common(topic)
    if "+" in topic or "#" in topic:
        raise ValueError("topic may not contain MQTT wildcards (+ or #)")


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` (a name) is matched by ``topic_filter`` under MQTT rules.

    Both arguments are assumed valid (see ``validate_filter`` and ``validate_name``).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholders in ``template``."""
    return set(_PLACEHOLDER.findall(template))


def check_template(template: str, allowed: Collection[str]) -> None:
    """Raise ``ValueError`` on an unknown placeholder or a stray brace in ``template``."""
    unknown = sorted(placeholders(template) - set(allowed))
    if unknown:
        names = ", ".join("{" + name + "}" for name in sorted(allowed))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (allowed: {names})")
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ValueError("unbalanced '{' or '}' (placeholders look like {thing})")


def render(template: str, **values: str) -> str:
    """Replace each ``{name}`` in ``template`` with ``values[name]``.

    A placeholder without a value raises ``ValueError``; text outside
    placeholders is kept as is.
    """
    missing = sorted(placeholders(template) - values.keys())
    if missing:
        raise ValueError(f"no value for placeholder {{{missing[0]}}} in {template!r}")
    return _PLACEHOLDER.sub(lambda match: values[match[1]], template)


def covers(general: str, specific: str) -> bool:
    """True when every topic matched by filter ``specific`` is matched by ``general``.

    The agent subscribes only to filters no other filter covers: a broker that
    sees both ``a/+`` and ``a/#`` from one client may deliver a message once per
    matching subscription, and the same trigger must not be recorded twice.
    """
    g_levels = general.split("/")
    s_levels = specific.split("/")
    if g_levels[0] in ("+", "#") and s_levels[0].startswith("$"):
        return False
    for i, g in enumerate(g_levels):
        if g == "#":
            # '#' covers the parent level too, and any further (wildcard) levels.
            return not (i == 0 and s_levels[0].startswith("$"))
        if i >= len(s_levels):
            return False
        s = s_levels[i]
        if s == "#":
            return False
        if g == "+":
            continue
        if g != s:
            return False
    return len(g_levels) == len(s_levels)


def minimal_filters(filters: Iterable[str]) -> list[str]:
    """The filters of ``filters`` that no other one covers (duplicates collapse)."""
    unique = sorted(set(filters))
    return [
        f for f in unique if not any(o != f and covers(o, f) for o in unique)
    ]


T = TypeVar("T")


class TopicMemo(Generic[T]):
    """``compute(topic)``, remembered per topic for up to ``limit`` topics: a device sees
    a few trigger topics over and over, and matching every filter against every
    message would be per-message work for nothing (beyond the limit, it is computed
    each time). What ``compute`` reads must not change: make a new memo when it does.
    Not locked: a racing second computation of the same topic gives the same value."""

    def __init__(self, compute: Callable[[str], T], limit: int = 4096) -> None:
        self._compute = compute
        self._limit = limit
        self._known: dict[str, T] = {}

    def __call__(self, topic: str) -> T:
        try:
            return self._known[topic]
        except KeyError:
            value = self._compute(topic)
            if len(self._known) < self._limit:
                self._known[topic] = value
            return value
