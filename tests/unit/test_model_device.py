"""The device inventory: defaults, the exact one-line error for each rule, lookup."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.errors import UsageError, ValidationError
from edge.model import (
    DEVICE_CLASSES,
    BrokerConfig,
    CloudConfig,
    DeviceConfig,
    OutboxConfig,
    Platform,
    find_device,
    load_device,
    load_inventory,
    parse_device,
)
from edge.model._reader import show

SOURCE = "devices/pi01.yaml"
MINIMAL = """\
name: pi01
class: raspberry-pi
broker: {url: "mqtt://pi01.local"}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices").mkdir()
    return tmp_path


def write(project: Path, text: str, name: str = "pi01.yaml") -> Path:
    path = project / "devices" / name
    path.write_text(textwrap.dedent(text))
    return path


def load(project: Path, text: str) -> DeviceConfig:
    write(project, text)
    return load_device(SOURCE)


def error(project: Path, text: str) -> str:
    write(project, text)
    with pytest.raises(ValidationError) as info:
        load_device(SOURCE)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- defaults ------------------------------------------------------------------


def test_minimal_device_has_defaults(project: Path) -> None:
    device = load(project, MINIMAL)
    assert device == DeviceConfig(
        name="pi01",
        device_class="raspberry-pi",
        platform=Platform(os="linux", architecture="aarch64"),
        thing_name="pi01",
        groups=(),
        broker=BrokerConfig(url="mqtt://pi01.local"),
        cloud=CloudConfig(
            region="us-east-1", s3_endpoint=None, dynamodb_endpoint=None, ca_bundle=None
        ),
        outbox=OutboxConfig(max_bytes=2 * 1024**3, when_full="backpressure"),
        source=SOURCE,
        path=project / "devices" / "pi01.yaml",
    )
    assert device.path.is_absolute()
    assert (device.broker.host, device.broker.port, device.broker.tls) == (
        "pi01.local",
        1883,
        False,
    )


def test_name_defaults_to_file_stem(project: Path) -> None:
    assert load(project, "class: raspberry-pi\nbroker: {url: 'mqtt://h'}\n").name == "pi01"


def test_snowball_defaults(project: Path) -> None:
    device = load(project, MINIMAL.replace("raspberry-pi", "snowball-edge"))
    assert device.platform == Platform(os="linux", architecture="x86_64")


def test_full_device(project: Path) -> None:
    device = load(
        project,
        """\
        name: pi01
        class: raspberry-pi
        platform: {os: linux, architecture: armv7l}
        thing_name: Pi-01.garage
        groups: [garage, cameras]
        broker:
          url: mqtts://broker.local:9883
          ca: certs/ca.pem
          cert: /etc/edge/pi01.crt
          key: ~/pi01.key
        cloud:
          region: eu-west-1
          s3_endpoint: https://s3.eu-west-1.amazonaws.com
          dynamodb_endpoint: http://localhost:8000
          ca_bundle: ../ca-bundle.pem
        outbox: {max_bytes: 512MB, when_full: drop-oldest}
        """,
    )
    devices = project / "devices"
    assert device.platform == Platform(os="linux", architecture="armv7l")
    assert device.thing_name == "Pi-01.garage"
    assert device.groups == ("garage", "cameras")
    assert device.broker == BrokerConfig(
        url="mqtts://broker.local:9883",
        ca=devices / "certs" / "ca.pem",
        cert=Path("/etc/edge/pi01.crt"),
        key=Path("~/pi01.key").expanduser(),
    )
    assert (device.broker.host, device.broker.port, device.broker.tls) == (
        "broker.local",
        9883,
        True,
    )
    assert device.cloud == CloudConfig(
        region="eu-west-1",
        s3_endpoint="https://s3.eu-west-1.amazonaws.com",
        dynamodb_endpoint="http://localhost:8000",
        ca_bundle=devices / ".." / "ca-bundle.pem",
    )
    assert device.outbox == OutboxConfig(max_bytes=512_000_000, when_full="drop-oldest")


def test_mqtts_without_ca_uses_system_cas(project: Path) -> None:
    broker = load(project, MINIMAL.replace("mqtt://", "mqtts://")).broker
    assert (broker.ca, broker.port, broker.tls) == (None, 8883, True)


def test_generic_linux_needs_an_architecture(project: Path) -> None:
    device = load(
        project,
        MINIMAL.replace("raspberry-pi", "generic-linux") + "platform: {architecture: amd64}\n",
    )
    assert device.platform == Platform(os="linux", architecture="amd64")
    assert device.platform.machine == "x86_64"
    assert error(project, MINIMAL.replace("raspberry-pi", "generic-linux")) == (
        f"{SOURCE}: platform: required for class 'generic-linux' "
        "(give platform.architecture: one of aarch64, armv7l, x86_64, amd64)"
    )
    assert (
        error(project, MINIMAL.replace("raspberry-pi", "generic-linux") + "platform: {os: linux}\n")
        == f"{SOURCE}: platform.architecture: required key is missing"
    )


@pytest.mark.parametrize("region", ["us-east-1", "us-gov-west-1", "ap-southeast-3", "snow"])
def test_regions(project: Path, region: str) -> None:
    assert load(project, MINIMAL + f"cloud: {{region: {region}}}\n").cloud.region == region


def test_parse_device_directly(tmp_path: Path) -> None:
    data = {"class": "snowball-edge", "broker": {"url": "mqtt://10.0.0.5"}}
    device = parse_device(data, source="inline", path=tmp_path / "sb1.yaml")
    assert device.name == "sb1"
    assert device.device_class in DEVICE_CLASSES
    assert device.path == (tmp_path / "sb1.yaml").resolve()


# -- errors --------------------------------------------------------------------


def test_missing_file(project: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_device("devices/nope.yaml")
    assert str(info.value) == "devices/nope.yaml: file not found"


def test_yaml_error(project: Path) -> None:
    assert error(project, "name: pi01\nclass: : x\n").startswith(
        f"{SOURCE}: line 2, column 8: invalid YAML: "
    )


def test_top_level_not_a_mapping(project: Path) -> None:
    assert error(project, "pi01\n") == (
        f"{SOURCE}: the document must be a mapping of keys to values, got str 'pi01'"
    )


def test_unknown_keys(project: Path) -> None:
    assert error(project, MINIMAL + "thingname: x\n") == (
        f"{SOURCE}: thingname: unknown key; did you mean 'thing_name'?"
    )
    assert error(project, MINIMAL.replace("{url:", "{uri:")) == (
        f"{SOURCE}: broker.uri: unknown key; did you mean 'url'?"
    )
    assert error(project, MINIMAL + "cloud: {regoin: x}\n") == (
        f"{SOURCE}: cloud.regoin: unknown key; did you mean 'region'?"
    )
    assert error(project, MINIMAL + "outbox: {max_byte: 1}\n") == (
        f"{SOURCE}: outbox.max_byte: unknown key; did you mean 'max_bytes'?"
    )
    assert error(project, MINIMAL + "platform: {arch: aarch64}\n") == (
        f"{SOURCE}: platform.arch: unknown key (expected one of: architecture, os)"
    )


def test_class_is_required_and_checked(project: Path) -> None:
    assert error(project, MINIMAL.replace("class: raspberry-pi\n", "")) == (
        f"{SOURCE}: class: required key is missing"
    )
    assert error(project, MINIMAL.replace("raspberry-pi", "raspberrypi")) == (
        f"{SOURCE}: class: 'raspberrypi' is not one of raspberry-pi, snowball-edge, generic-linux; "
        "did you mean 'raspberry-pi'?"
    )


@pytest.mark.parametrize("key", ["name", "thing_name"])
@pytest.mark.parametrize("value", ["pi/01", "pi+", "pi#", "pi 01", "$pi", "p" * 129])
def test_bad_names(project: Path, key: str, value: str) -> None:
    text = MINIMAL.replace("name: pi01\n", "") + f"{key}: '{value}'\n"
    what = "device name" if key == "name" else "thing name"
    assert error(project, text) == (
        f"{SOURCE}: {key}: {show(value)} is not a {what} "
        "(letters, digits, '_', '.', '-' (no '/' or MQTT wildcards), at most 128)"
    )


def test_bad_groups(project: Path) -> None:
    assert error(project, MINIMAL + "groups: [ok, a/b]\n") == (
        f"{SOURCE}: groups[1]: 'a/b' is not a group name "
        "(letters, digits, '_', '.', '-' (no '/' or MQTT wildcards), at most 128)"
    )
    assert (
        error(project, MINIMAL + "groups: [a, a]\n") == f"{SOURCE}: groups[1]: 'a' is listed twice"
    )
    assert error(project, MINIMAL + "groups: [1]\n") == f"{SOURCE}: groups[0]: 1 is not a string"
    assert error(project, MINIMAL + "groups: a\n") == f"{SOURCE}: groups: 'a' is not a list"


def test_architecture_must_fit_class(project: Path) -> None:
    assert error(project, MINIMAL + "platform: {architecture: x86_64}\n") == (
        f"{SOURCE}: platform.architecture: 'x86_64' does not fit class 'raspberry-pi' "
        "(one of aarch64, armv7l)"
    )
    assert error(project, MINIMAL + "platform: {architecture: arm64}\n") == (
        f"{SOURCE}: platform.architecture: 'arm64' is not one of aarch64, armv7l, x86_64, amd64; "
        "did you mean 'aarch64'?"
    )


def test_os_must_be_linux(project: Path) -> None:
    assert error(project, MINIMAL + "platform: {os: windows}\n") == (
        f"{SOURCE}: platform.os: 'windows' is not one of linux"
    )


def test_broker_required(project: Path) -> None:
    assert error(project, "class: raspberry-pi\n") == f"{SOURCE}: broker: required key is missing"
    assert error(project, "class: raspberry-pi\nbroker: {}\n") == (
        f"{SOURCE}: broker.url: required key is missing"
    )


@pytest.mark.parametrize("url", ["tcp:/x", "tcp://x", "mqtt://", "mqtt:/x", "http://x", "x"])
def test_broker_url_scheme(project: Path, url: str) -> None:
    assert error(project, MINIMAL.replace("mqtt://pi01.local", url)) == (
        f"{SOURCE}: broker.url: {url!r} is not an mqtt:// or mqtts:// URL"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mqtt://h:99999", "has an invalid port"),
        ("mqtt://h:port", "has an invalid port"),
        ("mqtt://user:secret@h", "may not contain credentials"),
        ("mqtt://h/topic", "may not have a path"),
        ("mqtt://h?x=1", "may not have a query or fragment"),
    ],
)
def test_broker_url_shape(project: Path, url: str, problem: str) -> None:
    assert error(project, MINIMAL.replace("mqtt://pi01.local", url)) == (
        f"{SOURCE}: broker.url: {url!r} {problem}"
    )


def test_tls_files_need_mqtts(project: Path) -> None:
    assert error(project, MINIMAL.replace("}", ", ca: ca.pem}")) == (
        f"{SOURCE}: broker.ca: is set, but 'mqtt://pi01.local' is not TLS; use mqtts://"
    )


def test_cert_and_key_go_together(project: Path) -> None:
    text = MINIMAL.replace("mqtt://", "mqtts://")
    assert error(project, text.replace("}", ", cert: c.pem}")) == (
        f"{SOURCE}: broker.key: required with broker.cert (a client certificate needs its key)"
    )
    assert error(project, text.replace("}", ", key: k.pem}")) == (
        f"{SOURCE}: broker.cert: required with broker.key (a client certificate needs its key)"
    )


@pytest.mark.parametrize("key", ["s3_endpoint", "dynamodb_endpoint"])
def test_endpoints_are_http_urls(project: Path, key: str) -> None:
    assert error(project, MINIMAL + f"cloud: {{{key}: 's3.local'}}\n") == (
        f"{SOURCE}: cloud.{key}: 's3.local' is not an http:// or https:// URL"
    )
    assert error(project, MINIMAL + f"cloud: {{{key}: 'https://k:s@h'}}\n") == (
        f"{SOURCE}: cloud.{key}: 'https://k:s@h' may not contain credentials"
    )


@pytest.mark.parametrize("region", ["US-EAST-1", "useast1", "mars", ""])
def test_bad_region(project: Path, region: str) -> None:
    message = error(project, MINIMAL + f"cloud: {{region: '{region}'}}\n")
    if region:
        assert message == (
            f"{SOURCE}: cloud.region: {region!r} is not an AWS region (like us-east-1) or 'snow'"
        )
    else:
        assert message == f"{SOURCE}: cloud.region: may not be empty"


def test_bad_outbox(project: Path) -> None:
    assert error(project, MINIMAL + "outbox: {max_bytes: 0}\n") == (
        f"{SOURCE}: outbox.max_bytes: 0 must be greater than zero"
    )
    assert error(project, MINIMAL + "outbox: {max_bytes: lots}\n") == (
        f"{SOURCE}: outbox.max_bytes: 'lots' is not a size (e.g. 1048576, 512KB, 10MB, 1GiB)"
    )
    assert error(project, MINIMAL + "outbox: {when_full: drop-newest}\n") == (
        f"{SOURCE}: outbox.when_full: 'drop-newest' is not one of backpressure, drop-oldest; "
        "did you mean 'drop-oldest'?"
    )


# -- inventory and lookup ------------------------------------------------------


def test_load_inventory(project: Path) -> None:
    write(project, MINIMAL)
    write(project, MINIMAL.replace("pi01", "local"), name="local.yml")
    (project / "devices" / "README.md").write_text("not a device")
    inventory = load_inventory("devices")
    assert list(inventory) == ["local", "pi01"]
    assert inventory["local"].source == "devices/local.yml"


def test_inventory_name_must_equal_stem(project: Path) -> None:
    write(project, MINIMAL.replace("name: pi01", "name: pi02"))
    with pytest.raises(ValidationError) as info:
        load_inventory("devices")
    assert str(info.value) == f"{SOURCE}: name: 'pi02' must equal the file name 'pi01'"


def test_inventory_names_are_unique(project: Path) -> None:
    write(project, MINIMAL)
    write(project, MINIMAL, name="pi01.yml")
    with pytest.raises(ValidationError) as info:
        load_inventory("devices")
    assert str(info.value) == "devices/pi01.yml: name: 'pi01' is also defined in devices/pi01.yaml"


def test_inventory_reports_the_first_broken_file(project: Path) -> None:
    write(project, "class: nope\n")
    with pytest.raises(ValidationError, match=r"^devices/pi01\.yaml: class: 'nope'"):
        load_inventory("devices")


def test_missing_devices_folder(project: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_inventory("fleet")
    assert str(info.value) == "no devices folder at fleet/"


def test_find_device(project: Path) -> None:
    write(project, MINIMAL)
    write(project, "class: broken\n", name="other.yaml")
    assert find_device("devices", "pi01").name == "pi01"
    assert find_device(project / "devices", "pi01").name == "pi01"


def test_find_unknown_device_suggests(project: Path) -> None:
    write(project, MINIMAL)
    write(project, MINIMAL.replace("pi01", "local"), name="local.yaml")
    with pytest.raises(UsageError) as info:
        find_device("devices", "pi1")
    assert str(info.value) == (
        "unknown device 'pi1' in devices/ (known: local, pi01); did you mean 'pi01'?"
    )
    with pytest.raises(UsageError) as info:
        find_device("devices/", "zzz")
    assert str(info.value) == "unknown device 'zzz' in devices/ (known: local, pi01)"


def test_find_device_in_empty_folder(project: Path) -> None:
    with pytest.raises(UsageError) as info:
        find_device("devices", "pi01")
    assert str(info.value) == "unknown device 'pi01' in devices/ (known: none)"


def test_find_device_checks_stem(project: Path) -> None:
    write(project, MINIMAL.replace("name: pi01", "name: pi02"))
    with pytest.raises(ValidationError) as info:
        find_device("devices", "pi01")
    assert str(info.value) == f"{SOURCE}: name: 'pi02' must equal the file name 'pi01'"


def test_find_device_defined_twice(project: Path) -> None:
    write(project, MINIMAL)
    write(project, MINIMAL, name="pi01.yml")
    with pytest.raises(UsageError) as info:
        find_device("devices", "pi01")
    assert str(info.value) == (
        "device 'pi01' is defined twice in devices/ (pi01.yaml and pi01.yml); keep one"
    )


# -- the reference page's examples are valid -----------------------------------


def test_docs_examples_are_valid(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "inventory.md"
    blocks = [part.split("```", 1)[0] for part in docs.read_text().split("```yaml\n")[1:]]
    assert len(blocks) == 2
    for block in blocks:
        name = block.split("\n", 1)[0].removeprefix("name: ").split()[0]
        (tmp_path / f"{name}.yaml").write_text(block)
    inventory = load_inventory(tmp_path)
    assert inventory["pi01"].broker.port == 8883
    assert inventory["snow1"].platform == Platform(os="linux", architecture="x86_64")
    assert inventory["snow1"].outbox.max_bytes == 500_000_000_000
