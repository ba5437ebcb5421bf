"""The web demo against hostile clients, over raw sockets: lengths, stalls, floods of connections, a decoder
held busy. Each gets a clear status, and the server keeps answering others."""

import json
import socket
import threading
import time
import urllib.request

import pytest

from tests.training.demo_client import post
from training.demo import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def strict(demo):
    """(server, port): the demo with a 1 s timeout, 4 connections and 1 decoder at most."""
    _, checkpoint, _ = demo
    server = serve(str(checkpoint), port=0, timeout=1.0, max_connections=4, decoders=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, server.server_address[1]
    server.shutdown()
    server.server_close()


def exchange(port: int, request: bytes, wait: float = 10.0) -> tuple[int | None, dict | None, float]:
    """(status, JSON body, seconds) of a raw request; the socket stays open from our side until the server ends
    the reply, so a server that waited for more data would show as a timeout."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    if not data:
        return None, None, time.monotonic() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else None, time.monotonic() - t0


HEAD = b"POST /colorize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"


@pytest.mark.parametrize(
    "length, status",
    [(b"-1", 400), (b"abc", 400), (None, 411), (b"1000000000000", 413), (b"+5", 400), (b"1e3", 400)],
)
def test_content_length_is_a_whole_number_within_the_cap(length, status, demo, capsys):
    url, _, _ = demo
    port = int(url.rsplit(":", 1)[1].strip("/"))
    header = b"" if length is None else b"Content-Length: " + length + b"\r\n"
    code, out, _ = exchange(port, HEAD + header + b"\r\n" + b"x" * 5000)
    assert code == status and out["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_a_client_that_stalls_is_closed_within_the_timeout(strict):
    _, port = strict
    code, _, seconds = exchange(port, b"POST /colorize HTTP/1.1\r\nHost: x\r\n")  # headers, then silence
    assert code is None and seconds < 5
    code, out, seconds = exchange(port, HEAD + b"Content-Length: 100\r\n\r\nonly a part")
    assert code == 408 and "stalled" in out["error"] and seconds < 5


def test_idle_connections_do_not_keep_a_request_out(strict):
    _, port = strict
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        for s in idle:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a request begun, never finished
        time.sleep(0.3)
        assert threading.active_count() <= threads + 4  # one thread per connection held, at most 4
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        for s in idle:
            s.close()


def test_slow_uploads_fill_the_connections_and_the_next_gets_503(strict):
    _, port = strict
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        for s in slow:
            s.sendall(HEAD + b"Content-Length: 1000\r\n\r\n")  # held: uploading, not idle
        time.sleep(0.3)
        code, out, _ = exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        assert code == 503 and "busy" in out["error"]
        time.sleep(2)  # their uploads stall past the timeout: closed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        for s in slow:
            s.close()


def test_decoding_waits_for_a_free_decoder_then_gets_503(strict, demo):
    server, port = strict
    photo = (demo[2] / "photo.jpg").read_bytes()
    assert server.colorize.slots.acquire(timeout=5)  # the one decoder is busy
    try:
        code, out = post(f"http://127.0.0.1:{port}/", {"photo": photo})
        assert code == 503 and "busy" in out["error"]
    finally:
        server.colorize.slots.release()
    code, out = post(f"http://127.0.0.1:{port}/", {"photo": photo})
    assert code == 200 and out["color"].startswith("data:image/png")
