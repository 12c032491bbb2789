"""Options several commands share, declared once so they read and behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BrokerOption = Annotated[
    str | None,
    typer.Option(
        envvar="EDGECTL_BROKER",
        help="mqtt://HOST:PORT (or mqtts://); default: the broker named in devices/.",
    ),
]
DevicesDirOption = Annotated[Path, typer.Option(help="Inventory folder.")]
