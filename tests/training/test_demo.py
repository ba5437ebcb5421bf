"""The web demo: its endpoint with bad uploads, and the page in headless Chromium (Debian's package, which
.ci/run installs) driven over the DevTools protocol: a real photo dropped in, the page's results equal to
`colorize`'s on the same photo, a screenshot taken."""

import base64
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from tests.conftest import real_photos
from training.colorize import main as colorize_main
from training.demo import serve
from training.run import TrainConfig, train

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo(tiny_store, tmp_path_factory):
    """(page URL, checkpoint, a photo, a reference photo, a folder) with the demo serving a trained model."""
    store, _ = tiny_store
    tmp = tmp_path_factory.mktemp("demo")
    cfg = TrainConfig(store=str(store), out=str(tmp / "run"), width=1 / 8, size=64, batch_size=4, steps=2,
                      holdout=0.25, eval_images=4)  # fmt: skip
    train(cfg)
    (_, photo), (_, reference) = real_photos(2)
    (tmp / "photo.jpg").write_bytes(photo)
    (tmp / "reference.jpg").write_bytes(reference)
    server = serve(str(tmp / "run" / "checkpoint-last.pt"), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", tmp / "run" / "checkpoint-last.pt", tmp
    server.shutdown()
    server.server_close()


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


def pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_bad_uploads_get_a_clear_message(demo):
    url, _, tmp = demo
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200 and b"Drop a photo" in r.read()
    code, out = post(url, {"photo": b"this is not an image"})
    assert code == 400 and "cannot read it as an image" in out["error"]
    code, out = post(url, {"photo": (tmp / "photo.jpg").read_bytes()[:600]})  # a truncated JPEG
    assert code == 400 and out["error"]
    code, out = post(url, {"strength": b"1"})
    assert code == 400 and "no photo" in out["error"]
    code, out = post(url, {"photo": (tmp / "photo.jpg").read_bytes()})  # the server is still there
    assert code == 200 and out["guided"] is None


class DevTools:
    """Headless Chromium driven over the DevTools protocol (websockets, a dependency of Prefect)."""

    def __init__(self, profile):
        from websockets.sync.client import connect

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1400,1000",
                 "--disable-background-networking", f"--user-data-dir={profile}",
                 "--remote-debugging-port=0"]  # fmt: skip
        self.proc = subprocess.Popen([CHROMIUM, *flags, "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws, self.next_id = connect(page["webSocketDebuggerUrl"], max_size=None), 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def upload(self, selector: str, path) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian's chromium package; .ci/run installs it)")
def test_the_page_colorizes_a_photo_as_colorize_does(demo):
    url, checkpoint, tmp = demo
    browser = DevTools(tmp / "chromium")
    try:
        browser.call("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while browser.js("document.readyState") != "complete" and time.monotonic() < deadline:
            time.sleep(0.1)
        browser.upload("#reference", tmp / "reference.jpg")
        browser.upload("#photo", tmp / "photo.jpg")  # its change event sends both
        while browser.js("document.body.dataset.done") != "1" and time.monotonic() < deadline + 120:
            assert not browser.js("document.getElementById('error').textContent")
            time.sleep(0.2)
        got = {k: browser.js(f"document.getElementById('{k}').src") for k in ("gray", "color", "guided")}
        status = browser.js("document.getElementById('status').textContent")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    (tmp / "screenshot.png").write_bytes(shot)
    screen = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    assert screen.shape[1] == 1400 and screen.shape[0] > 500 and screen.std() > 10  # a page with pictures
    width, height = Image.open(tmp / "photo.jpg").size
    assert f"{width} x {height}" in status
    for args, key in (([], "color"), (["--reference", str(tmp / "reference.jpg")], "guided")):
        assert (
            colorize_main(["--checkpoint", str(checkpoint), str(tmp / "photo.jpg"), "--out", str(tmp / key), *args])
            == 0
        )
        expected = np.asarray(Image.open(tmp / key / "photo.png").convert("RGB"))
        assert pixels(got[key]).shape == (height, width, 3) and np.array_equal(pixels(got[key]), expected), key
    gray = pixels(got["gray"]).astype(int)
    assert gray.shape == (height, width, 3) and np.abs(gray - gray[..., 1:2]).max() <= 1  # Lab (L, 0, 0): neutral
    assert not np.array_equal(pixels(got["guided"]), pixels(got["color"]))  # the reference changed the colours
