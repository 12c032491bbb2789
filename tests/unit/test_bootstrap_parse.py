"""The Python runtime's event parsing: a shortcut for UTF-8 that must always agree
with ``json.loads`` (value, or error) for every payload a trigger can carry."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.runtime.bootstrap import _parse

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def outcome(parse: Any, payload: bytes) -> tuple[str, Any]:
    try:
        return "ok", json.dumps(parse(payload), sort_keys=True)
    except ValueError as exc:
        return "error", type(exc).__name__


@given(st.binary(max_size=24))
def test_any_bytes_parse_as_json_loads_parses_them(payload: bytes) -> None:
    assert outcome(_parse, payload) == outcome(json.loads, payload)


@given(JSON_VALUES, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le",
                                     "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]))
def test_json_in_every_encoding_json_loads_knows(value: Any, encoding: str) -> None:
    payload = json.dumps(value).encode(encoding)
    assert outcome(_parse, payload) == outcome(json.loads, payload)


def test_the_special_numbers_json_loads_accepts() -> None:
    assert math.isnan(_parse(b"NaN")) and _parse(b"-Infinity") == -math.inf
