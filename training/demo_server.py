"""The demo's HTTP plumbing, standard library only, made to survive hostile clients.

`Server` holds at most N connections at once: a new one takes the place of the oldest that is still waiting for
its request line and headers (so idle clients cannot lock others out), else it is answered 503 and closed.
Every read and write has a socket timeout; an upload is read only with a Content-Length that is a whole number
within the cap, and within a deadline; every refusal is a JSON `{"error": ...}` and one line in the log.
"""

import json
import re
import socket
import sys
import threading
import time
from email.parser import HeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.common.cli import one_line

MAX_UPLOAD = 64 << 20  # bytes of one request: two photos
MIN_RATE = 1 << 18  # bytes per second an upload must keep up, beyond the timeout: a trickle ends
DIGITS = re.compile(r"[0-9]{1,19}")


class HttpError(Exception):
    """A request refused with an HTTP status; the message is the JSON error the client reads."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def json_parts(data: dict) -> list[bytes]:
    """A JSON object as byte strings to send one after another. A value given as a list of bytes is a string
    made of those (ASCII, nothing to escape: base64), sent as it is rather than copied into one big text."""
    parts = [b"{"]
    for k, (key, value) in enumerate(data.items()):
        parts.append(f"{', ' if k else ''}{json.dumps(key)}: ".encode())
        parts += [b'"', *value, b'"'] if isinstance(value, list) else [json.dumps(value).encode()]
    return [*parts, b"}"]


def form_fields(content_type: str, body: bytes | bytearray) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (RFC 7578), by name; each field's bytes are copied once."""
    head = HeaderParser().parsestr(f"Content-Type: {content_type}\r\n\r\n")
    boundary = head.get_param("boundary")
    if head.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise HttpError(400, "expected a multipart/form-data upload")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pos, fields = body.find(delimiter[2:]), {}
    if pos < 0 or (pos > 0 and body[pos - 2 : pos] != b"\r\n"):
        raise HttpError(400, "a multipart/form-data upload without its boundary")
    pos += len(delimiter) - 2
    while not body.startswith(b"--", pos):  # after each delimiter: a part, or "--" at the end
        start = body.find(b"\r\n\r\n", pos)
        end = body.find(delimiter, start)
        if start < 0 or end < 0:
            raise HttpError(400, "a multipart/form-data upload cut short")
        part = HeaderParser().parsestr(body[pos:start].decode("latin-1").strip())
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = bytes(memoryview(body)[start + 4 : end])
        pos = end + len(delimiter)
    return fields


class Server(ThreadingHTTPServer):
    """A threading HTTP server with at most `max_connections` connections (each a thread) at once."""

    block_on_close = False  # closing it does not wait for clients that stall

    def __init__(self, address, handler: type, max_connections: int = 8):
        self.max_connections = max_connections
        self._open: dict[socket.socket, bool] = {}  # connection -> still waiting for its request (in arrival order)
        self._guard = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._guard:
            if len(self._open) >= self.max_connections:
                idle = next((c for c, waiting in self._open.items() if waiting), None)
                if idle is not None:
                    del self._open[idle]
                    _shut(idle)  # its thread reads the end of the stream and ends
            admitted = len(self._open) < self.max_connections
            if admitted:
                self._open[request] = True
        if admitted:
            return super().process_request(request, client_address)
        print(f"{client_address[0]} refused: {self.max_connections} connections at once", file=sys.stderr)
        body = json.dumps({"error": f"busy: {self.max_connections} connections at once; try again"}).encode()
        try:
            request.settimeout(1.0)
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
        except OSError:
            pass
        self.shutdown_request(request)

    def started(self, connection) -> bool:
        """The connection's request line and headers are in: it is no longer idle. False if it was closed to make
        room for another (what it sent is then not answered)."""
        with self._guard:
            if connection in self._open:
                self._open[connection] = False
                return True
            return False

    def shutdown_request(self, request):
        with self._guard:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client left or stalled: its connection ends, the server goes on
            print(f"{client_address[0]} connection ended: {one_line(error)}", file=sys.stderr)
        else:
            super().handle_error(request, client_address)


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class JsonHandler(BaseHTTPRequestHandler):
    """Replies, uploads and the log of a JSON endpoint; `timeout` is every read's and write's limit (seconds)."""

    timeout = 30.0
    server_version = "colorize-demo"

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if not self.server.started(self.connection):
            self.close_connection = True
            return False
        return True

    def reply(self, status: int, parts: list[bytes], kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for part in parts:
            self.wfile.write(part)

    def json(self, status: int, data: dict) -> None:
        self.reply(status, json_parts(data), "application/json")

    def body(self, limit: int = MAX_UPLOAD) -> bytearray:
        """The upload, read only when its Content-Length is one whole number of bytes within `limit`, and only
        while it keeps arriving (the timeout, plus a second per MIN_RATE bytes)."""
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "send the upload with a Content-Length (chunked uploads are not taken)")
        values = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if not values:
            raise HttpError(411, "a POST needs a Content-Length")
        if len(set(values)) > 1:
            raise HttpError(400, f"{len(values)} different Content-Length headers")
        if not DIGITS.fullmatch(values[0]):
            raise HttpError(400, f"Content-Length {values[0][:40]!r} is not a whole number of bytes")
        size = int(values[0])
        if size > limit:
            raise HttpError(413, f"upload of {size:,} bytes: at most {limit:,}")
        deadline, data, got = time.monotonic() + self.timeout + size / MIN_RATE, bytearray(size), 0
        try:
            while got < size:
                self.connection.settimeout(max(0.001, min(self.timeout, deadline - time.monotonic())))
                n = self.rfile.readinto1(memoryview(data)[got : got + (1 << 20)])
                if not n:
                    raise HttpError(400, f"the upload ended after {got:,} of {size:,} bytes")
                got += n
        except TimeoutError:
            raise HttpError(408, f"the upload stalled after {got:,} of {size:,} bytes") from None
        finally:
            self.connection.settimeout(self.timeout)
        return data

    def log_message(self, fmt, *args):  # one line per request on stderr, as the server does, without the date
        print(f"{self.address_string()} {fmt % args}", file=sys.stderr)
