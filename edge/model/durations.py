"""Durations and sizes as people write them in YAML: ``3s``, ``500ms``, ``10MB``, ``1GiB``.

Both parsers take the ``source`` and ``field`` of the value so that their errors
read like every other document error: ``<source>: <field>: <message>``.
"""

from __future__ import annotations

import math
import re

from edge.errors import ValidationError

__all__ = ["parse_duration", "parse_size"]

_NUMBER = r"(?P<number>\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"^{_NUMBER}\s*(?P<unit>ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE = re.compile(rf"^{_NUMBER}\s*(?P<unit>[kmgt]i?b|b)?$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: object, *, source: str, field: str) -> float:
    """Return ``value`` in seconds.

    Accepts a number of seconds (``3``, ``1.5``) or a string with a unit:
    ``500ms``, ``3s``, ``1.5s``, ``2m``, ``1h`` (a bare number string is seconds).
    Negative, infinite and malformed values raise ``ValidationError``.
    """
    seconds: float
    if isinstance(value, bool):
        raise _bad_duration(value, source, field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValidationError(f"{value!r} is negative", source=source, field=field, value=value)
        match = _DURATION.match(text)
        if match is None:
            raise _bad_duration(value, source, field)
        seconds = float(match["number"]) * _DURATION_UNITS[match["unit"]]
    else:
        raise _bad_duration(value, source, field)
    if not math.isfinite(seconds):
        raise _bad_duration(value, source, field)
    if seconds < 0:
        raise ValidationError(f"{value!r} is negative", source=source, field=field, value=value)
    return seconds


def parse_size(value: object, *, source: str, field: str) -> int:
    """Return ``value`` in bytes.

    Accepts an integer number of bytes or a string with a unit: ``B``, ``KB``,
    ``MB``, ``GB``, ``TB`` (powers of 1000) and ``KiB``, ``MiB``, ``GiB``, ``TiB``
    (powers of 1024); units are case-insensitive. Fractions are rounded down to
    whole bytes (``1.5KB`` is 1500).
    """
    if isinstance(value, bool):
        raise _bad_size(value, source, field)
    if isinstance(value, int):
        if value < 0:
            raise ValidationError(f"{value!r} is negative", source=source, field=field, value=value)
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValidationError(f"{value!r} is negative", source=source, field=field, value=value)
        match = _SIZE.match(text)
        if match is None:
            raise _bad_size(value, source, field)
        unit = (match["unit"] or "b").lower()
        number = match["number"]
        if "." in number:
            return int(float(number) * _SIZE_UNITS[unit])
        return int(number) * _SIZE_UNITS[unit]
    raise _bad_size(value, source, field)


def _bad_duration(value: object, source: str, field: str) -> ValidationError:
    return ValidationError(
        f"{value!r} is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)",
        source=source,
        field=field,
        value=value,
    )


def _bad_size(value: object, source: str, field: str) -> ValidationError:
    return ValidationError(
        f"{value!r} is not a size (e.g. 1048576, 512KB, 10MB, 1GiB)",
        source=source,
        field=field,
        value=value,
    )
