"""A TCP proxy on 127.0.0.1 that puts a distant region between a client and a local server.

Each request waits `latency_ms` before it is passed on: a request is the first bytes the client sends after the
server last answered on that connection, so that every request of a keep-alive connection pays one round trip,
as it would to an object store far away. At most `max_connections` connections at once (the others wait to be
accepted). `outage(seconds)` drops every connection and refuses new ones for that long, as a server that goes
away and comes back; `cut_uploads_over(nbytes, seconds, skip)` does so in the middle of the first request
that sends more than nbytes (after `skip` such requests), as a server that dies while a large object is
written. `stop()` ends it. It runs its own event loop in a daemon thread.
"""

import asyncio
import contextlib
import threading


class LatencyProxy:
    def __init__(self, target: tuple[str, int], latency_ms: float = 0.0, max_connections: int = 256):
        self.target, self.latency = target, latency_ms / 1000.0
        self.limit = asyncio.Semaphore(max_connections)
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._cut: list | None = None  # [nbytes, seconds, large requests still to let through]
        self.cuts = 0  # requests cut so far
        self._tasks: set = set()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True, name="latency-proxy").start()
        ready.wait(30)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._listen(0))
        ready.set()
        self.loop.run_forever()

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader, writer) -> None:
        async with self.limit:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            self._conns |= {writer, up_writer}
            answered = asyncio.Event()
            answered.set()  # the first bytes are a request
            try:
                await asyncio.gather(self._pump(reader, up_writer, answered, True),
                                     self._pump(up_reader, writer, answered, False))  # fmt: skip
            finally:
                for w in (writer, up_writer):
                    self._conns.discard(w)
                    w.close()

    async def _pump(self, src, dst, answered: asyncio.Event, upstream: bool) -> None:
        sent = 0  # bytes of the request under way
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while data := await src.read(1 << 16):
                if upstream and answered.is_set():  # a new request: one round trip
                    answered.clear()
                    sent = 0
                    if self.latency:
                        await asyncio.sleep(self.latency)
                elif not upstream:
                    answered.set()
                if upstream:
                    sent += len(data)
                    if self._cut and sent > self._cut[0] and sent - len(data) <= self._cut[0]:
                        if self._cut[2] == 0:
                            seconds, self._cut = self._cut[1], None
                            self.cuts += 1
                            self._tasks.add(asyncio.ensure_future(self._down(seconds)))  # apart from this pump
                            return
                        self._cut[2] -= 1
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError, RuntimeError):
            dst.write_eof()

    async def _down(self, seconds: float) -> None:
        port = self.port
        self._server.close()
        for w in list(self._conns):
            w.transport.abort()
        await asyncio.sleep(seconds)
        await self._listen(port)

    def outage(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for `seconds`, then listen on the same port again."""
        asyncio.run_coroutine_threadsafe(self._down(seconds), self.loop)

    def cut_uploads_over(self, nbytes: int, seconds: float, skip: int = 0) -> None:
        """An outage of `seconds` in the middle of the (skip + 1)-th request that sends more than nbytes."""
        self._cut = [nbytes, seconds, skip]

    def stop(self) -> None:
        async def close():
            self._server.close()
            for w in list(self._conns):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
