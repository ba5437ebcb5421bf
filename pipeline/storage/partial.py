"""Ranged reads from S3-compatible servers that answer a range with `200 OK` and a Content-Range header instead of
S3's `206 Partial Content` (rclone's `serve s3`, for one). obstore refuses such answers ("non-partial response");
here the same range is fetched through a presigned URL and the body taken as the server sends it. The first
refusal marks the bucket, so later reads go this way at once. Only reads of byte ranges take this path.
"""

import asyncio
import datetime
import functools
import re
import urllib.error
import urllib.request

_NOT_PARTIAL: set[tuple] = set()  # (scheme, bucket, options) of servers known to answer ranges with 200
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def refuses_partial(error: BaseException) -> bool:
    return "non-partial response" in str(error)


def known(path) -> bool:
    return (path.scheme, path.bucket, path.options) in _NOT_PARTIAL


def mark(path) -> None:
    _NOT_PARTIAL.add((path.scheme, path.bucket, path.options))


def get(path, start: int | None = None, end: int | None = None, suffix: int | None = None) -> tuple[int, bytes]:
    """(the object's size, bytes [start, end) or its last `suffix` bytes) with one signed GET."""
    import obstore

    header = f"bytes=-{suffix}" if suffix is not None else f"bytes={start}-{'' if end is None else end - 1}"
    url = obstore.sign(path.client, "GET", path.key, datetime.timedelta(minutes=15))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": header}), timeout=120) as r:
            body, got = r.read(), CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise FileNotFoundError(f"{path}: no such object") from None
        raise OSError(f"{path}: HTTP {e.code} for a ranged GET") from None
    except urllib.error.URLError as e:
        raise OSError(f"{path}: {e.reason}") from None
    if got:  # the range, as asked
        size = int(got.group(3)) if got.group(3) != "*" else -1
        return size, body
    # the whole object: the server ignored the range
    if suffix is not None:
        return len(body), body[len(body) - min(suffix, len(body)) :]
    return len(body), body[start:end]


def zarr_store(scoped, root, read_only: bool):
    """zarr-python's ObjectStore over `scoped` (the client of the prefix `root`), whose ranged reads fall back as
    above when the server refuses to answer them with 206."""
    return _tolerant_class()(scoped, read_only=read_only, root=root)


@functools.cache
def _tolerant_class():
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.storage import ObjectStore

    class TolerantObjectStore(ObjectStore):
        def __init__(self, store, *, read_only: bool = False, root=None):
            super().__init__(store, read_only=read_only)
            self.root = root

        def with_read_only(self, read_only: bool = False):
            return type(self)(self.store, read_only=read_only, root=self.root)

        async def get(self, key, prototype, byte_range=None):
            if byte_range is None or not known(self.root):
                try:
                    return await super().get(key, prototype, byte_range)
                except Exception as e:  # noqa: BLE001 - obstore's error types vary with the store
                    if byte_range is None or not refuses_partial(e):
                        raise
                    mark(self.root)
            if isinstance(byte_range, RangeByteRequest):
                where = {"start": byte_range.start, "end": byte_range.end}
            elif isinstance(byte_range, OffsetByteRequest):
                where = {"start": byte_range.offset}
            elif isinstance(byte_range, SuffixByteRequest):
                where = {"suffix": byte_range.suffix}
            else:
                raise ValueError(f"unexpected byte range {byte_range!r}")
            try:
                _, data = await asyncio.to_thread(get, self.root / key, **where)
            except FileNotFoundError:
                return None
            return prototype.buffer.from_bytes(data)

        async def get_partial_values(self, prototype, key_ranges):
            key_ranges = list(key_ranges)
            if not known(self.root):
                try:
                    return await super().get_partial_values(prototype, key_ranges)
                except Exception as e:  # noqa: BLE001 - as above
                    if not refuses_partial(e):
                        raise
                    mark(self.root)
            return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    return TolerantObjectStore
