"""Structured JSON logs for the agent: one object per line, payloads never included."""

from __future__ import annotations

import json
import logging
import sys
import time

_FIELDS = ("device", "component", "topic", "request_id", "stream")


class JsonFormatter(logging.Formatter):
    def __init__(self, device: str) -> None:
        super().__init__()
        self._device = device

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "device": self._device,
            "msg": record.getMessage(),
        }
        for key in _FIELDS[1:]:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


def configure(device: str, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(device))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore is chatty at INFO about credentials; keep the device log about the device.
    logging.getLogger("botocore").setLevel(logging.WARNING)
