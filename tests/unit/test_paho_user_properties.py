"""The hand-packed PUBLISH user properties are byte for byte what paho packs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.mqtt.paho_bus import _UserProperties, pack_user_properties

# MQTT strings are UTF-8 without surrogates (and paho refuses U+0000).
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
               max_size=300)  # fmt: skip


def paho_packed(pairs: list[tuple[str, str]]) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = pairs
    return props.pack()  # type: ignore[no-untyped-call,no-any-return]


@given(st.lists(st.tuples(text, text), min_size=1, max_size=40))
def test_same_bytes_as_paho(pairs: list[tuple[str, str]]) -> None:
    assert pack_user_properties(pairs) == paho_packed(pairs)


def test_long_block_uses_a_multi_byte_length() -> None:
    pairs = [("k" * 100, "v" * 100)] * 100  # 20,500 bytes of properties
    packed = pack_user_properties(pairs)
    assert packed[0] & 0x80 and packed[1] & 0x80  # three length bytes
    assert packed == paho_packed(pairs)


def test_the_publish_properties_pack_and_print_the_pairs() -> None:
    props = _UserProperties({"request-id": "r1", "seq": "7"})
    assert props.pack() == paho_packed([("request-id", "r1"), ("seq", "7")])
    assert "request-id" in str(props)
