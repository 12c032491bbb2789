"""components/thumbnailer: frames to thumbnails, in-process, in the worker, and on an agent."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from edge.testing import mqtt_event, run_handler
from tests.components.helpers import COMPONENTS, copy_component, wait_for
from tests.harness.agent import Probe, user_props
from tests.harness.moto import unique_name

HERE = COMPONENTS / "thumbnailer"
JPEG = HERE / "events" / "frame-640x480.jpg"
PNG = HERE / "events" / "frame-300x200.png"
TOPIC = "cameras/cam1/frames"


def image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("mode", ["process", "worker"])
def test_a_jpeg_frame_becomes_a_small_jpeg(mode: str) -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, JPEG.read_bytes()), mode=mode)
    assert result.ok, result.error
    assert result.content_type == "application/octet-stream"
    thumb = image(result.value)
    assert thumb.format == "JPEG"
    assert thumb.size == (128, 96)  # aspect ratio kept, longest side 128


def test_a_png_with_alpha_becomes_a_jpeg() -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, PNG.read_bytes()))
    assert result.ok, result.error
    thumb = image(result.value)
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (128, 85))


def test_the_size_comes_from_the_environment() -> None:
    result = run_handler(
        HERE, mqtt_event(TOPIC, JPEG.read_bytes()), environment={"THUMBNAIL_MAX_SIDE": "32"}
    )
    assert image(result.value).size == (32, 24)


@pytest.mark.parametrize("mode", ["process", "worker"])
def test_garbage_is_a_clear_error(mode: str) -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, b"not an image"), mode=mode)
    assert not result.ok
    assert result.error_type == "ValueError"
    assert "not a JPEG or PNG image (12 bytes)" in result.error["errorMessage"]


def test_on_a_real_agent_thumbnails_reach_s3_and_a_record_per_frame_dynamodb(
    tmp_path: Path, agent_factory: Any, probe: Probe, moto_server: Any,
    s3_client: Any, ddb_client: Any,
) -> None:
    bucket, table = unique_name("thumbs"), unique_name("thumbs")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    comp = copy_component(
        "thumbnailer", tmp_path,
        {"bucket: edge-demo-thumbnails": f"bucket: {bucket}",
         "table: edge-demo-thumbnails": f"table: {table}"},
    )
    agent_factory([comp], moto_url=moto_server.url).start()
    probe.follow("thumbnails/#", "edge/+/+/errors")
    frames = {"cam1": JPEG.read_bytes(), "cam2": PNG.read_bytes()}
    for camera, frame in frames.items():
        probe.publish(f"cameras/{camera}/frames", frame)
    outputs = probe.wait_count("thumbnails/dev1/ready", 2)
    assert all(image(m.payload).format == "JPEG" for m in outputs)

    items = wait_for(lambda: ddb_client.scan_all(table), lambda v: len(v) >= 2)
    assert sorted(i["topic"] for i in items) == ["cameras/cam1/frames", "cameras/cam2/frames"]
    assert {i["request_id"] for i in items} == {user_props(m)["request-id"] for m in outputs}
    keys = wait_for(lambda: s3_client.list_keys(bucket), lambda v: len(v) >= 2)
    assert len(keys) == 2 and all(k.endswith(".bin") for k in keys)
    sizes = sorted(image(s3_client.get_object(bucket, k)).size for k in keys)
    assert sizes == [(128, 85), (128, 96)]
    assert not probe.on("edge/"), [json.loads(m.payload) for m in probe.on("edge/")]
