"""The web demo: its endpoint with bad uploads, and the page in headless Chromium (Debian's package, which
.ci/run installs) driven over the DevTools protocol: a real photo dropped in, the page's results equal to
`colorize`'s on the same photo, a screenshot taken (hostile clients: test_demo_clients.py)."""

import base64
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.training.demo_client import png, post
from training.colorize import main as colorize_main
from training.demo import main as demo_main
from training.demo_server import HttpError, form_fields

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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


def test_form_fields_are_parsed_by_name_and_a_broken_form_refused():
    kind = "multipart/form-data; boundary=XyZ"
    body = (b"a preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n-XyZ, --XyZ in the data\r\n--XyZ\r\n"
            b"Content-Disposition: form-data; name=\"strength\"\r\n\r\n0.5\r\n--XyZ--\r\n")  # fmt: skip
    assert form_fields(kind, body) == {"photo": b"\x89PNG\r\n-XyZ, --XyZ in the data", "strength": b"0.5"}
    for content_type, broken in ((kind, body[: len(body) // 2]), (kind, b"no boundary"), ("text/plain", body)):
        with pytest.raises(HttpError) as e:
            form_fields(content_type, broken)
        assert e.value.status == 400


def test_photos_above_the_budget_get_413_from_their_header(demo):
    url, _, tmp = demo
    huge = png(Image.new("L", (6000, 6000), 128))  # 36 M pixels in a few kB
    code, out = post(url, {"photo": huge})
    assert code == 413 and "6000 x 6000 = 36,000,000 pixels, more than the budget of 25,000,000" in out["error"]
    code, out = post(url, {"photo": (tmp / "photo.jpg").read_bytes(), "reference": huge})
    assert code == 413 and out["error"].startswith("reference: 6000 x 6000")


def test_strength_must_be_a_finite_number_not_below_0(demo):
    url, _, tmp = demo
    photo, reference = (tmp / "photo.jpg").read_bytes(), (tmp / "reference.jpg").read_bytes()
    for strength in (b"nan", b"inf", b"-1", b"strong"):
        code, out = post(url, {"photo": photo, "reference": reference, "strength": strength})
        assert code == 400 and "finite number >= 0" in out["error"], strength


def test_errors_name_the_problem_in_words(demo):
    url, _, tmp = demo
    code, out = post(url, {"photo": b"this is not an image"})
    assert code == 400 and out["error"] == "photo: cannot read it as an image (not an image Pillow can read)"
    broken = png(Image.open(tmp / "photo.jpg"))
    broken = broken[: len(broken) // 2] + bytes(len(broken) // 2)  # a PNG header, then damaged pixel data
    code, out = post(url, {"photo": broken})
    assert code == 400 and "cannot read it as an image" in out["error"] and " at 0x" not in out["error"]


def test_command_line_refusals_are_one_line(demo, capsys):
    _, checkpoint, _ = demo
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for argv, expected in (
            (["--port=-1"], "port from 0 to 65535"),
            (["--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1"),
            (["--timeout", "0"], "--timeout"),
            (["--decoders", "0"], "--decoders"),
        ):
            try:
                rc = demo_main(["--checkpoint", str(checkpoint), *argv])
            except SystemExit as e:  # argparse
                rc = e.code
            out, err = capsys.readouterr()
            assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err and not out, (argv, err)
    finally:
        busy.close()
