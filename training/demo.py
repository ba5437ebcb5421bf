"""A local web demo: `colorize-demo --checkpoint C | --model DIR [--port 7860]`, then open the printed address.

Drop a photo on the page (and, optionally, a colour reference photo): it shows the gray input, the
colorization and the reference-guided one side by side, each at the photo's full resolution and with a
download link. The results are those of `colorize` on the same photo (`training.colorize.predict`, `join`).
A page of the standard library's HTTP server, not Gradio: it adds no dependency to the core install (Gradio
brings 52 packages, docs/training.md). It listens on 127.0.0.1 unless `--host` says otherwise.

Its memory is bounded whatever the clients do: a photo above `--max-pixels` is refused from its header (413);
decoding and everything per pixel run in at most `--decoders` requests at once (a request waits up to
`--timeout` seconds for its turn, then gets 503); at most `--max-connections` connections are held, each with a
socket timeout, each upload at most MAX_UPLOAD bytes (`training.demo_server`).
"""

import argparse
import base64
import html
import io
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipeline.common.cli import ArgumentParser, Refused, command, finite_float, one_line, port, positive_int
from pipeline.decode import DEFAULT_MAX_PIXELS
from pipeline.storage import first_contact, reachable
from training.demo_server import MAX_UPLOAD, HttpError, JsonHandler, Server, form_fields

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>colorize</title>
<style>
body { font-family: sans-serif; margin: 2em; }
#drop { border: 2px dashed #888; padding: 2em; text-align: center; }
#drop.over { background: #eef; }
.row { display: flex; gap: 1em; margin-top: 1em; }
figure { flex: 1; margin: 0; }
figure img { max-width: 100%; }
#error { color: #b00; }
</style></head><body>
<h1>colorize</h1>
<p>Model: <code>__MODEL__</code>. Photos are colorized on this machine; nothing leaves it.</p>
<div id="drop">Drop a photo here, or choose one: <input type="file" id="photo" accept="image/*"></div>
<p>Reference (optional, steers the colours): <input type="file" id="reference" accept="image/*">
strength <input type="number" id="strength" value="1" min="0" max="5" step="0.25"></p>
<p id="status"></p><p id="error"></p>
<div class="row">
<figure><img id="gray" alt=""><figcaption>gray input</figcaption></figure>
<figure><img id="color" alt=""><figcaption>colorized <a id="color-dl" download>download</a></figcaption></figure>
<figure><img id="guided" alt=""><figcaption>guided by the reference <a id="guided-dl" download>download</a>
</figcaption></figure>
</div>
<script>
const $ = (id) => document.getElementById(id);
async function send(file) {
  const form = new FormData();
  form.append("photo", file, file.name);
  const ref = $("reference").files[0];
  if (ref) form.append("reference", ref, ref.name);
  form.append("strength", $("strength").value);
  $("error").textContent = ""; $("status").textContent = "colorizing " + file.name + "...";
  const reply = await fetch("/colorize", {method: "POST", body: form});
  const out = await reply.json();
  if (!reply.ok) { $("status").textContent = ""; $("error").textContent = out.error; return; }
  const stem = file.name.replace(/\\.[^.]*$/, "");
  for (const key of ["gray", "color", "guided"]) { $(key).src = out[key] || ""; }
  for (const key of ["color", "guided"]) {
    $(key + "-dl").href = out[key] || ""; $(key + "-dl").download = stem + "-" + key + ".png";
  }
  $("status").textContent = `${file.name}: ${out.width} x ${out.height}, ${out.ms} ms`;
  document.body.dataset.done = String(Number(document.body.dataset.done || 0) + 1);
}
$("photo").addEventListener("change", () => $("photo").files[0] && send($("photo").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
});
</script></body></html>
"""


def png_url(rgb: np.ndarray) -> list[bytes]:
    """A PNG data URL in two parts (`demo_server.json_parts` sends them without joining them)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return [b"data:image/png;base64,", base64.b64encode(buf.getbuffer())]


class Colorizer:
    """The model and its settings: one forward pass at a time on the device, and at most `decoders` requests
    decoding or joining pixels at once."""

    def __init__(self, checkpoint: str, device: str, recovery: str | None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 decoders: int = 2):  # fmt: skip
        from training.checkpoint import load_model, recovery_of

        self.model, self.cfg, _ = load_model(checkpoint, device)
        self.recovery = recovery_of(self.cfg, recovery)
        self.name = f"{self.cfg.get('variant', '?')} ({Path(checkpoint).name})"
        self.max_pixels, self.decoders = max_pixels, decoders
        self.lock, self.slots = threading.Lock(), threading.BoundedSemaphore(decoders)

    @contextmanager
    def slot(self, wait: float):
        """One of the `decoders` turns, waited for up to `wait` seconds; else 503."""
        if not self.slots.acquire(timeout=wait):
            raise HttpError(503, f"busy: {self.decoders} photos are being colorized; try again in a moment")
        try:
            yield
        finally:
            self.slots.release()

    def _taking(self, what: str, read, data: bytes):
        """read(data, max_pixels), a refusal made an HTTP error: 413 above the pixel budget, else 400."""
        from training.colorize import TooLarge

        try:
            return read(data, self.max_pixels)
        except Refused as e:
            raise HttpError(413 if isinstance(e, TooLarge) else 400, f"{what}: {e}") from None

    def __call__(self, photo: bytes, reference: bytes | None, strength: float) -> dict:
        from training.colorize import L_of_bytes, check_image, join, predict, reference_of
        from training.guidance import guided_ab

        t0 = time.perf_counter()
        for what, data in (("photo", photo), ("reference", reference)):
            if data:  # both headers checked before anything is decoded
                self._taking(what, check_image, data)
        L = self._taking("photo", L_of_bytes, photo)
        ref = self._taking("reference", reference_of, reference) if reference else None
        head, size = self.cfg["head"], self.cfg.get("size") or 224
        with self.lock:  # one forward pass gives both results
            out, full = predict(self.model, [L], size)
            ab = guided_ab(out, head, self.recovery, None)[0]
            guided = guided_ab(out, head, self.recovery, [ref], strength)[0] if ref else None
        lum = full[0][0, 0]  # L at full resolution, on the device; each result is encoded as soon as it is made
        result = {"gray": png_url(join(lum, None)), "color": png_url(join(lum, ab))}
        result["guided"] = png_url(join(lum, guided)) if ref else None
        ms = round((time.perf_counter() - t0) * 1e3)
        return result | {"width": L.shape[1], "height": L.shape[0], "ms": ms}


def strength_of(field: bytes | None) -> float:
    """The reference's strength: a finite number >= 0 (nan would give a flat image), 1 when not given."""
    text = bytes(field or b"").decode("utf-8", "replace").strip() or "1"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, f"strength must be a finite number >= 0, got {text[:40]!r}")
    return value


def handler(colorize: Colorizer, timeout: float = 30.0) -> type:
    class Handler(JsonHandler):
        def do_GET(self):
            if self.path in ("/", "/index.html"):
                page = PAGE.replace("__MODEL__", html.escape(colorize.name)).encode()
                self.reply(200, [page], "text/html; charset=utf-8")
            else:
                self.json(404, {"error": f"no page {self.path[:200]}"})

        def do_POST(self):
            try:
                if self.path != "/colorize":
                    raise HttpError(404, f"no endpoint {self.path[:200]}")
                body = self.body(MAX_UPLOAD)
                with colorize.slot(self.timeout):  # the form, the pixels and the reply: bounded in number
                    fields = form_fields(self.headers.get("Content-Type", ""), body)
                    del body
                    photo, reference = fields.get("photo"), fields.get("reference") or None
                    if not photo:
                        raise HttpError(400, "no photo in the upload")
                    self.json(200, colorize(photo, reference, strength_of(fields.get("strength"))))
            except HttpError as e:
                self.json(e.status, {"error": str(e)})
            except Exception as e:  # a bug, not the upload: the client hears of it, the log gets the traceback
                if not isinstance(e, OSError):  # (an OSError is the connection's: nothing can be sent)
                    self.json(500, {"error": f"the server failed ({type(e).__name__})"})
                raise

    Handler.timeout = timeout
    return Handler


def listen(colorize: Colorizer, host: str, port: int, *, timeout: float = 30.0, max_connections: int = 8) -> Server:
    """The demo's server for a loaded model (its `colorize`), bound and ready (`serve_forever` to run it)."""
    server = Server((host, port), handler(colorize, timeout), max_connections)
    server.colorize = colorize
    return server


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", recovery=None, *,
          max_pixels: int = DEFAULT_MAX_PIXELS, decoders: int = 2, timeout: float = 30.0,
          max_connections: int = 8) -> Server:  # fmt: skip
    """The demo's server, bound and ready (`serve_forever` to run it); port 0 picks a free one."""
    colorize = Colorizer(checkpoint, device, recovery, max_pixels, decoders)
    return listen(colorize, host, port, timeout=timeout, max_connections=max_connections)


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


@command
def main(argv=None) -> int:
    from training.checkpoint import add_model_arguments
    from training.colorize import quiet_pillow

    p = ArgumentParser(prog="colorize-demo", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=7860, help="0: any free port")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"larger photos are refused from their header (default {DEFAULT_MAX_PIXELS:,})")  # fmt: skip
    p.add_argument("--decoders", type=positive_int, default=2, help="requests decoding and colorizing at once")
    p.add_argument("--max-connections", type=positive_int, default=8, help="connections held at once")
    p.add_argument("--timeout", type=seconds, default=30.0, help="seconds a connection may stall")
    args = p.parse_args(argv)
    quiet_pillow()
    with first_contact():  # an endpoint that does not answer is reported within seconds
        reachable(args.checkpoint)
    colorize = Colorizer(args.checkpoint, args.device, args.recovery, args.max_pixels, args.decoders)
    try:
        server = listen(colorize, args.host, args.port, timeout=args.timeout, max_connections=args.max_connections)
    except OSError as e:
        raise Refused(f"cannot listen on {args.host}:{args.port}: {e.strerror or one_line(e)}") from None
    print(f"colorize demo: http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
