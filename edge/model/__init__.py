"""The vocabulary every room speaks: component manifests, device inventory, topics, durations.

Documents are validated strictly; every fault is a one-line ``ValidationError``
naming the file, the dotted field and the bad value.
"""

from edge.model.component import (
    LANGUAGES,
    ComponentManifest,
    DynamoDBResults,
    Limits,
    Output,
    Results,
    S3Results,
    Trigger,
    load_component,
    parse_component,
)
from edge.model.device import (
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
from edge.model.durations import parse_duration, parse_size

__all__ = [
    "DEVICE_CLASSES",
    "LANGUAGES",
    "BrokerConfig",
    "CloudConfig",
    "ComponentManifest",
    "DeviceConfig",
    "DynamoDBResults",
    "Limits",
    "OutboxConfig",
    "Output",
    "Platform",
    "Results",
    "S3Results",
    "Trigger",
    "find_device",
    "load_component",
    "load_device",
    "load_inventory",
    "parse_component",
    "parse_device",
    "parse_duration",
    "parse_size",
]
