"""Thumbnailer: a camera frame (JPEG or PNG bytes) in, a JPEG thumbnail out.

The trigger is ``encoding: binary``, so ``event`` is the raw frame. Returning
``bytes`` makes the thumbnail the invocation's binary result: the agent
publishes it on the output topic, writes it to S3 as
``<prefix><result_id>.bin`` and records the frame in DynamoDB (topic, camera in
the topic, request id, the thumbnail itself), each write idempotent on the
result id, so a frame processed twice after a crash is stored once.
"""

import io
import os

from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG", "PNG"}


def handler(event, context):
    if not isinstance(event, bytes | bytearray):
        raise TypeError("expected a binary frame; is the trigger's encoding 'binary'?")
    max_side = int(os.environ.get("THUMBNAIL_MAX_SIDE", "128"))
    try:
        image = Image.open(io.BytesIO(event))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a JPEG or PNG image ({len(event)} bytes): {exc}") from None
    if image.format not in FORMATS:
        raise ValueError(f"unsupported image format {image.format}; send JPEG or PNG")
    camera = context.client_context.custom["subject"].split("/")[1]
    source_format, source_size = image.format, image.size
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=80)
    print(
        f"camera {camera}: {source_format} {source_size[0]}x{source_size[1]} "
        f"-> {image.size[0]}x{image.size[1]}, {out.tell()} bytes"
    )
    return out.getvalue()
