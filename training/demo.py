"""A local web demo: `colorize-demo --checkpoint C [--port 7860]`, then open the printed address.

Drop a photo on the page (and, optionally, a colour reference photo): it shows the gray input, the
colorization and the reference-guided one side by side, each at the photo's full resolution and with a
download link. The results are those of `colorize` on the same photo (`training.colorize.predict`, `to_rgb`).
A page of the standard library's HTTP server, not Gradio: it adds no dependency to the core install (Gradio
brings 52 packages, docs/training.md). It listens on 127.0.0.1 unless `--host` says otherwise.
"""

import argparse
import base64
import email.parser
import email.policy
import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

MAX_UPLOAD = 64 << 20  # bytes of one request: two photos

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


def png_url(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("expected a multipart/form-data upload")
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) or b""
            for part in message.iter_parts()}  # fmt: skip


class Colorizer:
    """The model and its settings; one request at a time on the device."""

    def __init__(self, checkpoint: str, device: str, recovery: str | None):
        from training.checkpoint import load_model, recovery_of

        self.model, self.cfg, _ = load_model(checkpoint, device)
        self.recovery = recovery_of(self.cfg, recovery)
        self.name = f"{self.cfg.get('variant', '?')} ({Path(checkpoint).name})"
        self.lock = threading.Lock()

    def __call__(self, photo: bytes, reference: bytes | None, strength: float) -> dict:
        from training.colorize import L_of_bytes, predict, to_rgb
        from training.colour import gray_rgb8
        from training.guidance import Reference

        t0 = time.perf_counter()
        L = L_of_bytes(photo)
        ref = Reference.of_bytes(reference) if reference else None
        with self.lock:  # one forward pass gives both results
            out, full = predict(self.model, [L], self.cfg["size"] or 224)
            color = to_rgb(out, full, self.cfg["head"], self.recovery)[0]
            guided = to_rgb(out, full, self.cfg["head"], self.recovery, ref, strength)[0] if ref else None
        gray = gray_rgb8(torch.from_numpy(L)[None])[0].numpy()
        out = {"gray": png_url(gray), "color": png_url(color), "guided": png_url(guided) if ref else None}
        ms = round((time.perf_counter() - t0) * 1e3)
        return out | {"width": L.shape[1], "height": L.shape[0], "ms": ms}


def handler(colorize: Colorizer) -> type:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: dict) -> None:
            self._reply(code, json.dumps(data).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._reply(200, PAGE.replace("__MODEL__", colorize.name).encode(), "text/html; charset=utf-8")
            else:
                self._json(404, {"error": f"no page {self.path}"})

        def do_POST(self):
            if self.path != "/colorize":
                return self._json(404, {"error": f"no endpoint {self.path}"})
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_UPLOAD:
                return self._json(413, {"error": f"upload of {size:,} bytes: at most {MAX_UPLOAD:,}"})
            try:
                fields = form_fields(self.headers.get("Content-Type", ""), self.rfile.read(size))
                if not fields.get("photo"):
                    raise ValueError("no photo in the upload")
                strength = float(fields.get("strength") or 1)
            except ValueError as e:
                return self._json(400, {"error": str(e)})
            try:
                result = colorize(fields["photo"], fields.get("reference") or None, strength)
            except Exception as e:  # noqa: BLE001 - a bad upload is the user's message, never the server's end
                return self._json(400, {"error": f"cannot read it as an image ({type(e).__name__}: {e})"})
            self._json(200, result)

        def log_message(self, fmt, *args):  # one line per request on stderr, as the server does, without the date
            print(f"{self.address_string()} {fmt % args}", file=sys.stderr)

    return Handler


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", recovery=None):
    """The demo's server, bound and ready (`serve_forever` to run it); port 0 picks a free one."""
    return ThreadingHTTPServer((host, port), handler(Colorizer(checkpoint, device, recovery)))


def main(argv=None) -> int:
    from training.checkpoint import add_model_arguments

    p = argparse.ArgumentParser(prog="colorize-demo", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    args = p.parse_args(argv)
    try:
        server = serve(args.checkpoint, args.host, args.port, args.device, args.recovery)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"colorize demo: http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
