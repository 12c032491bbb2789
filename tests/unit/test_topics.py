"""MQTT topic rules: examples and hypothesis properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.model import topics
from edge.model.topics import (
    TopicMemo,
    matches,
    placeholders,
    render,
    validate_filter,
    validate_name,
)

# A level of a topic name: no wildcards, no '/', no NUL.
level = st.text(
    alphabet=st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)),
    max_size=8,
)
plain_level = level.filter(lambda text: not text.startswith("$"))
names = st.lists(level, min_size=1, max_size=6).map("/".join).filter(bool)
plain_names = st.lists(plain_level, min_size=1, max_size=6).map("/".join).filter(bool)


# -- validation examples -------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["a", "a/b/c", "+", "#", "a/+/c", "a/#", "+/+", "/", "a//b", "$SYS/#", "sport/+/player1"],
)
def test_valid_filters(topic: str) -> None:
    validate_filter(topic)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "topic is empty"),
        ("a/#/b", "'#' must be the last level"),
        ("a#", "'#' must be alone in its level"),
        ("a/b#", "'#' must be alone in its level"),
        ("a+", "'+' must be alone in its level"),
        ("a/+b/c", "'+' must be alone in its level"),
        ("a\x00b", "topic contains a NUL character"),
        ("a" * 65536, "topic is longer than 65535 bytes of UTF-8"),
        ("é" * 32768, "topic is longer than 65535 bytes of UTF-8"),
    ],
)
def test_invalid_filters(topic: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        validate_filter(topic)


def test_longest_topic_is_valid() -> None:
    validate_filter("a" * 65535)
    validate_name("a" * 65535)


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "$SYS/broker", "thumbs/{thing}/ready"])
def test_valid_names(topic: str) -> None:
    validate_name(topic)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "topic is empty"),
        ("a/+", "topic may not contain MQTT wildcards (+ or #)"),
        ("#", "topic may not contain MQTT wildcards (+ or #)"),
        ("a\x00", "topic contains a NUL character"),
    ],
)
def test_invalid_names(topic: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        validate_name(topic)


# -- matching examples ---------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("a/+", "a/", True),
        ("+/b", "/b", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+", "a", True),
        ("+", "a/b", False),
        ("+/+", "a/b", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/+", "sport/", True),
        ("#", "$SYS/broker", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("$SYS/+", "$SYS/broker", True),
        ("a/b/c", "a/b", False),
    ],
)
def test_matches_examples(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


# -- matching properties -------------------------------------------------------


@given(names)
def test_a_topic_matches_itself(topic: str) -> None:
    validate_filter(topic)
    assert matches(topic, topic)


@given(plain_names)
def test_hash_matches_every_plain_topic(topic: str) -> None:
    assert matches("#", topic)


@given(names)
def test_leading_wildcards_never_match_dollar_topics(topic: str) -> None:
    dollar = "$" + topic
    levels = dollar.split("/")
    assert not matches("#", dollar)
    assert not matches("/".join(["+", *levels[1:]]), dollar)
    assert not matches("+/#", dollar)


@given(plain_names, st.data())
def test_plus_replacing_any_level_matches(topic: str, data: st.DataObject) -> None:
    levels = topic.split("/")
    index = data.draw(st.integers(min_value=0, max_value=len(levels) - 1))
    topic_filter = "/".join([*levels[:index], "+", *levels[index + 1 :]])
    validate_filter(topic_filter)
    assert matches(topic_filter, topic)


@given(plain_names, st.data())
def test_hash_after_any_prefix_matches(topic: str, data: st.DataObject) -> None:
    levels = topic.split("/")
    cut = data.draw(st.integers(min_value=0, max_value=len(levels)))
    topic_filter = "/".join([*levels[:cut], "#"])
    validate_filter(topic_filter)
    assert matches(topic_filter, topic)


@given(names, names)
def test_exact_filters_match_only_equal_topics(topic_filter: str, topic: str) -> None:
    assert matches(topic_filter, topic) is (topic_filter == topic)


@given(plain_names, level)
def test_plus_never_spans_levels(topic: str, extra: str) -> None:
    levels = topic.split("/")
    topic_filter = "/".join(["+"] * len(levels))
    assert matches(topic_filter, topic)
    assert not matches(topic_filter, topic + "/" + extra)


# -- templates -----------------------------------------------------------------


def test_render_fills_thing_and_component() -> None:
    assert (
        render("edge/{thing}/{component}/errors", thing="pi01", component="hello")
        == "edge/pi01/hello/errors"
    )


def test_render_accepts_any_names() -> None:
    assert render("{thing}/{date}/", thing="pi01", date="2024-05-01") == "pi01/2024-05-01/"


def test_render_without_placeholders_is_identity() -> None:
    assert render("a/b", thing="x") == "a/b"


def test_render_missing_value_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no value for placeholder \{component\}"):
        render("{thing}/{component}", thing="x")


def test_placeholders() -> None:
    assert placeholders("edge/{thing}/{component}/x") == {"thing", "component"}
    assert placeholders("a/b") == set()


def test_check_template() -> None:
    topics.check_template("a/{thing}", ("thing", "component"))
    with pytest.raises(ValueError, match=r"unknown placeholder \{device\}"):
        topics.check_template("a/{device}", ("thing", "component"))
    with pytest.raises(ValueError, match="unbalanced"):
        topics.check_template("a/{thing", ("thing", "component"))


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True), plain_level, max_size=4))
def test_render_roundtrip(values: dict[str, str]) -> None:
    template = "/".join("{" + name + "}" for name in values) or "x"
    assert placeholders(template) == set(values)
    rendered = render(template, **values)
    assert rendered == ("/".join(values.values()) if values else "x")


# -- covers / minimal_filters: the agent's subscription set -----------------------------
from edge.model.topics import covers, minimal_filters  # noqa: E402


@pytest.mark.parametrize(
    ("general", "specific", "expected"),
    [
        ("a/#", "a/+", True),
        ("a/#", "a", True),
        ("#", "a/b/c", True),
        ("a/+", "a/b", True),
        ("a/+", "a/#", False),
        ("a/+", "a/b/c", False),
        ("a/b", "a/+", False),
        ("+/b", "a/b", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("a/+/c", "a/b/+", False),
    ],
)
def test_covers(general: str, specific: str, expected: bool) -> None:
    assert covers(general, specific) is expected


def test_minimal_filters_drops_covered_and_duplicate_filters() -> None:
    assert minimal_filters(["a/+", "a/#", "b/c", "b/c", "x/+/z", "x/y/+"]) == [
        "a/#", "b/c", "x/+/z", "x/y/+",
    ]


@given(st.lists(st.sampled_from(["a", "b", "+"]), min_size=1, max_size=4), st.lists(
    st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4))
def test_covers_agrees_with_matches(filter_levels: list[str], topic_levels: list[str]) -> None:
    """If ``general`` covers ``specific``, every topic matching specific matches general."""
    specific = "/".join(filter_levels)
    topic = "/".join(topic_levels)
    for general in (specific, specific + "/#", "#", "+/" + specific):
        if covers(general, specific) and matches(specific, topic):
            assert matches(general, topic)


def test_topic_memo_computes_each_topic_once_up_to_its_limit() -> None:
    calls: list[str] = []

    def compute(topic: str) -> int:
        calls.append(topic)
        return len(topic)

    memo = TopicMemo(compute, limit=2)
    assert [memo("a"), memo("bb"), memo("a"), memo("bb")] == [1, 2, 1, 2]
    assert calls == ["a", "bb"]
    assert [memo("ccc"), memo("ccc")] == [3, 3]  # over the limit: computed each time
    assert calls == ["a", "bb", "ccc", "ccc"]
