"""The Python runtime's event parsing and result encoding: shortcuts that must always
agree with ``json.loads`` (value, or error) for every payload a trigger can carry, and
with the compact JSON encoder for every value a handler can return."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.runtime.bootstrap import _COMPACT, _dumps, _parse

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


@given(JSON_VALUES, st.text(alphabet=" \t\r\n\ufeff", max_size=3),
       st.text(alphabet=" \t\r\nx,]}\"0", max_size=3))
def test_json_with_anything_around_it(value: Any, before: str, after: str) -> None:
    # The shortcut takes only a value that spans the whole text: whitespace, a BOM or
    # trailing bytes around it leave it to json.loads (same value, or same error).
    payload = (before + json.dumps(value) + after).encode("utf-8")
    assert outcome(_parse, payload) == outcome(json.loads, payload)


def encoded(value: Any) -> tuple[str, Any]:
    try:
        return "ok", _dumps(value)
    except (TypeError, ValueError) as exc:
        return "error", type(exc).__name__


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.binary(max_size=2) | st.sets(st.integers(), max_size=2),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text() | st.integers() | st.floats() | st.none(), inner, max_size=4)
    | st.tuples(inner, inner),
    max_leaves=12,
))
def test_results_encode_as_the_compact_encoder_encodes_them(value: Any) -> None:
    # The result encoder with its C encoder built once: the same text, or the same error
    # (sets and bytes inside a result are TypeErrors), for every value a handler returns.
    try:
        expected: tuple[str, Any] = ("ok", _COMPACT.encode(value))
    except (TypeError, ValueError) as exc:
        expected = ("error", type(exc).__name__)
    assert encoded(value) == expected


def test_a_circular_result_is_the_compact_encoders_error() -> None:
    value: list[Any] = []
    value.append(value)
    assert encoded(value) == ("error", "ValueError")
