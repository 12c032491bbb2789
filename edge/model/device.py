"""The device inventory, ``devices/<name>.yaml`` (reference: docs/inventory.md).

``load_device(path)`` reads one file; ``load_inventory(devices_dir)`` reads
them all and checks that each ``name`` equals its file's stem;
``find_device(devices_dir, name)`` reads only the one asked for, so a broken
file elsewhere does not block work on a healthy device.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edge.errors import UsageError, ValidationError
from edge.model._reader import Section, load_yaml, show

__all__ = [
    "ARCHITECTURES",
    "ArtifactStore",
    "CLASS_ARCHITECTURES",
    "DEVICE_CLASSES",
    "MQTT_CLIENTS",
    "OUTBOX_POLICIES",
    "BrokerConfig",
    "CloudConfig",
    "DeviceConfig",
    "OutboxConfig",
    "Platform",
    "find_device",
    "load_device",
    "load_inventory",
    "parse_device",
]

DEVICE_CLASSES = ("raspberry-pi", "snowball-edge", "generic-linux")
ARCHITECTURES = ("aarch64", "armv7l", "x86_64", "amd64")
#: The architectures each class may declare; the first is the default (none for generic-linux).
CLASS_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "raspberry-pi": ("aarch64", "armv7l"),
    "snowball-edge": ("x86_64", "amd64"),
    "generic-linux": ARCHITECTURES,
}
#: Other spellings of an architecture, for a better did-you-mean than spelling distance.
ARCHITECTURE_ALIASES = {
    "arm64": "aarch64",
    "armhf": "armv7l",
    "armv7": "armv7l",
    "arm": "armv7l",
    "x64": "x86_64",
    "x86-64": "x86_64",
}
OPERATING_SYSTEMS = ("linux",)
OUTBOX_POLICIES = ("backpressure", "drop-oldest")
#: The MQTT client library behind the bus: paho-mqtt, or awsiotsdk's MQTT 5 client
#: (``awscrt``) for fleets on AWS IoT Core.
MQTT_CLIENTS = ("paho", "awsiot")
DEVICE_SUFFIXES = (".yaml", ".yml")

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_NAME_RULE = "letters, digits, '_', '.', '-' (no '/' or MQTT wildcards), at most 128"
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}|snow")
_TOP_KEYS = (
    "name", "class", "platform", "thing_name", "groups", "broker", "cloud", "outbox",
    "artifacts", "trust",
)  # fmt: skip
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str  # aarch64 | armv7l | x86_64 | amd64, as written

    @property
    def machine(self) -> str:
        """The architecture as ``uname -m`` on Linux spells it (``amd64`` becomes ``x86_64``)."""
        return "x86_64" if self.architecture == "amd64" else self.architecture


@dataclass(frozen=True)
class BrokerConfig:
    url: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    client: str = "paho"  # one of MQTT_CLIENTS

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The port in the URL, else 8883 for mqtts:// and 1883 for mqtt://."""
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


@dataclass(frozen=True)
class CloudConfig:
    region: str = "us-east-1"
    s3_endpoint: str | None = None
    dynamodb_endpoint: str | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class OutboxConfig:
    max_bytes: int = 2 * 1024**3
    when_full: str = "backpressure"  # "backpressure" | "drop-oldest"


@dataclass(frozen=True)
class ArtifactStore:
    """Where deployments put artifacts for this device (``artifacts.s3``); none: the broker."""

    bucket: str
    prefix: str = "edgectl/artifacts/"


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    device_class: str
    platform: Platform
    thing_name: str
    groups: tuple[str, ...]
    broker: BrokerConfig
    cloud: CloudConfig
    outbox: OutboxConfig
    source: str
    path: Path  # the YAML file, absolute
    artifacts: ArtifactStore | None = None
    #: The Ed25519 public key whose signatures the agent accepts (``trust.fleet_public_key``;
    #: default ``keys/fleet.pub`` beside the ``devices/`` folder the file sits in).
    fleet_public_key: Path | None = None

    @property
    def trusted_key(self) -> Path:
        return self.fleet_public_key or self.path.parent.parent / "keys" / "fleet.pub"


def load_device(path: Path | str) -> DeviceConfig:
    """Read and validate one device file.

    ``name`` defaults to the file's stem but is not required to equal it here,
    so a device can read its own copy under any file name
    (``/etc/edgectl/device.yaml``); ``load_inventory`` enforces the match.
    """
    file = Path(path)
    source = str(path)
    data = load_yaml(file, source=source)
    return parse_device(data, source=source, path=file.resolve())


def parse_device(data: object, *, source: str, path: Path) -> DeviceConfig:
    """Validate the parsed YAML ``data`` of the device file at ``path``."""
    path = path.resolve()
    doc = Section.of(data, source=source, field="", keys=_TOP_KEYS)
    name = doc.matching("name", _NAME, f"a device name ({_NAME_RULE})", default=path.stem)
    device_class = doc.choice("class", DEVICE_CLASSES)
    platform = _platform(doc, device_class)
    thing_name = doc.matching("thing_name", _NAME, f"a thing name ({_NAME_RULE})", default=name)

    def check_group(field: str, group: str) -> None:
        if not _NAME.fullmatch(group):
            raise ValidationError(
                f"{show(group)} is not a group name ({_NAME_RULE})",
                source=source,
                field=field,
                value=group,
            )

    groups = doc.string_list("groups", check_group)
    return DeviceConfig(
        name=name,
        device_class=device_class,
        platform=platform,
        thing_name=thing_name,
        groups=groups,
        broker=_broker(doc, path.parent),
        cloud=_cloud(doc, path.parent),
        outbox=_outbox(doc),
        source=source,
        path=path,
        artifacts=_artifacts(doc),
        fleet_public_key=_trust(doc, path.parent),
    )


def _artifacts(doc: Section) -> ArtifactStore | None:
    section = doc.section("artifacts", ("s3",))
    if section is None:
        return None
    s3 = section.required_section("s3", ("bucket", "prefix"))
    bucket = s3.matching(
        "bucket", _BUCKET, "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"
    )
    prefix = s3.string("prefix", "edgectl/artifacts/")
    if prefix.startswith("/"):
        s3.fail("prefix", f"{show(prefix)} may not start with '/'", prefix)
    return ArtifactStore(bucket=bucket, prefix=prefix)


def _trust(doc: Section, base: Path) -> Path | None:
    section = doc.section("trust", ("fleet_public_key",))
    if section is None:
        return None
    return section.path("fleet_public_key", base)


def _platform(doc: Section, device_class: str) -> Platform:
    allowed = CLASS_ARCHITECTURES[device_class]
    section = doc.section("platform", ("os", "architecture"))
    if section is None:
        if device_class == "generic-linux":
            doc.fail(
                "platform",
                "required for class 'generic-linux' "
                f"(give platform.architecture: one of {', '.join(ARCHITECTURES)})",
            )
        return Platform(os="linux", architecture=allowed[0])
    os_name = section.choice("os", OPERATING_SYSTEMS, default="linux")
    default = None if device_class == "generic-linux" else allowed[0]
    given = section.get("architecture")
    if isinstance(given, str) and given in ARCHITECTURE_ALIASES:
        section.fail(
            "architecture",
            f"{show(given)} is not one of {', '.join(ARCHITECTURES)}; "
            f"did you mean {ARCHITECTURE_ALIASES[given]!r}?",
            given,
        )
    architecture = section.choice("architecture", ARCHITECTURES, default=default)
    if architecture not in allowed:
        section.fail(
            "architecture",
            f"{show(architecture)} does not fit class {device_class!r} "
            f"(one of {', '.join(allowed)})",
            architecture,
        )
    return Platform(os=os_name, architecture=architecture)


def _check_url(section: Section, key: str, url: str, schemes: tuple[str, str]) -> None:
    """Fail unless ``url`` has one of ``schemes``, a host, and no credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        section.fail(key, f"{show(url)} is not an {schemes[0]}:// or {schemes[1]}:// URL", url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        section.fail(key, f"{show(url)} has an invalid port", url)
    if parts.username or parts.password:
        section.fail(key, f"{show(url)} may not contain credentials", url)
    if parts.query or parts.fragment:
        section.fail(key, f"{show(url)} may not have a query or fragment", url)


def _broker(doc: Section, base: Path) -> BrokerConfig:
    section = doc.required_section("broker", ("url", "ca", "cert", "key", "client"))
    url = section.string("url")
    _check_url(section, "url", url, ("mqtt", "mqtts"))
    if urlsplit(url).path not in ("", "/"):
        section.fail("url", f"{show(url)} may not have a path", url)
    broker = BrokerConfig(
        url=url,
        ca=section.path("ca", base),
        cert=section.path("cert", base),
        key=section.path("key", base),
        client=section.choice("client", MQTT_CLIENTS, default="paho"),
    )
    for key in ("ca", "cert", "key"):
        if section.has(key) and not broker.tls:
            section.fail(key, f"is set, but {url!r} is not TLS; use mqtts://", section.get(key))
    if (broker.cert is None) != (broker.key is None):
        missing, given = ("key", "cert") if broker.key is None else ("cert", "key")
        section.fail(missing, f"required with broker.{given} (a client certificate needs its key)")
    return broker


def _cloud(doc: Section, base: Path) -> CloudConfig:
    section = doc.section("cloud", ("region", "s3_endpoint", "dynamodb_endpoint", "ca_bundle"))
    if section is None:
        return CloudConfig()
    region = section.matching(
        "region", _REGION, "an AWS region (like us-east-1) or 'snow'", default="us-east-1"
    )
    endpoints: dict[str, str | None] = {}
    for key in ("s3_endpoint", "dynamodb_endpoint"):
        url = section.optional_string(key)
        if url is not None:
            _check_url(section, key, url, ("http", "https"))
        endpoints[key] = url
    return CloudConfig(
        region=region,
        s3_endpoint=endpoints["s3_endpoint"],
        dynamodb_endpoint=endpoints["dynamodb_endpoint"],
        ca_bundle=section.path("ca_bundle", base),
    )


def _outbox(doc: Section) -> OutboxConfig:
    section = doc.section("outbox", ("max_bytes", "when_full"))
    if section is None:
        return OutboxConfig()
    default = OutboxConfig()
    return OutboxConfig(
        max_bytes=section.size("max_bytes", default.max_bytes),
        when_full=section.choice("when_full", OUTBOX_POLICIES, default=default.when_full),
    )


def _device_files(devices_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in devices_dir.iterdir()
        if path.suffix in DEVICE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )


def _check_dir(devices_dir: Path | str) -> Path:
    folder = Path(devices_dir)
    if not folder.is_dir():
        raise UsageError(f"no devices folder at {_display(devices_dir)}")
    return folder


def _display(devices_dir: Path | str) -> str:
    text = str(devices_dir)
    return text if text.endswith("/") else text + "/"


def _check_stem(device: DeviceConfig, file: Path) -> None:
    if device.name != file.stem:
        raise ValidationError(
            f"{device.name!r} must equal the file name {file.stem!r}",
            source=device.source,
            field="name",
            value=device.name,
        )


def load_inventory(devices_dir: Path | str) -> dict[str, DeviceConfig]:
    """Every ``*.yaml``/``*.yml`` in ``devices_dir``, by name (sorted)."""
    folder = _check_dir(devices_dir)
    inventory: dict[str, DeviceConfig] = {}
    for file in _device_files(folder):
        device = load_device(Path(devices_dir) / file.name)
        _check_stem(device, file)
        if device.name in inventory:
            other = inventory[device.name].source
            raise ValidationError(
                f"{device.name!r} is also defined in {other}",
                source=device.source,
                field="name",
                value=device.name,
            )
        inventory[device.name] = device
    return inventory


def find_device(devices_dir: Path | str, name: str) -> DeviceConfig:
    """The device called ``name``, read from ``<devices_dir>/<name>.yaml`` (or ``.yml``).

    An unknown name raises ``UsageError`` listing the known devices, with a
    did-you-mean when one is close.
    """
    folder = _check_dir(devices_dir)
    known = sorted({file.stem for file in _device_files(folder)})
    if name not in known:
        listed = ", ".join(known) if known else "none"
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"unknown device {name!r} in {_display(devices_dir)} (known: {listed}){hint}"
        )
    files = [folder / f"{name}{suffix}" for suffix in DEVICE_SUFFIXES]
    present = [file for file in files if file.is_file()]
    if len(present) > 1:
        raise UsageError(
            f"device {name!r} is defined twice in {_display(devices_dir)} "
            f"({present[0].name} and {present[1].name}); keep one"
        )
    device = load_device(Path(devices_dir) / present[0].name)
    _check_stem(device, present[0])
    return device
