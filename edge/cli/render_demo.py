"""Rendering of ``edgectl demo``'s findings: what reached DynamoDB and S3."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.local.demo import DemoResult


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def demo_result(console: Console, result: DemoResult) -> None:
    outputs = Table(title=f"Output topic: {len(result.outputs)} message(s)", title_justify="left")
    for col in ("topic", "request-id", "payload"):
        outputs.add_column(col)
    for msg in result.outputs:
        outputs.add_row(msg["topic"], msg.get("request-id", ""), _short(msg["payload"]))
    console.print(outputs)

    items = Table(title=f"DynamoDB: {len(result.items)} item(s)", title_justify="left")
    for col in ("pk", "sk", "request_id", "result"):
        items.add_column(col)
    for item in result.items:
        items.add_row(
            str(item.get("pk")), str(item.get("sk")), str(item.get("request_id")),
            _short(item.get("result")),
        )
    if result.items:
        console.print(items)

    objects = Table(title=f"S3: {len(result.objects)} object(s)", title_justify="left")
    for col in ("key", "content"):
        objects.add_column(col)
    for obj in result.objects:
        objects.add_row(f"s3://{obj['bucket']}/{obj['key']}", _short(obj["content"], 50))
    if result.objects:
        console.print(objects)
    if result.errors:
        console.print(f"[yellow]{len(result.errors)} error record(s) on the errors topic[/]")
    console.print(
        f"[green]demo finished in {result.elapsed_s:.1f}s[/]: every result was published "
        "and reached the sinks its manifest names; everything started was stopped."
    )
