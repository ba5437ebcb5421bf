"""A client of the web demo for its tests: a multipart upload to its endpoint, and a PNG of an image to upload."""

import io
import json
import urllib.error
import urllib.request
import uuid

from PIL import Image


def post(url: str, fields: dict[str, bytes]) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}"\r\n\r\n'.encode()
                    + v + b"\r\n" for k, v in fields.items()) + f"--{boundary}--\r\n".encode()  # fmt: skip
    request = urllib.request.Request(
        url + "colorize", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
