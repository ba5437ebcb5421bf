"""`ObjectPath`: a key or prefix in an object store (`s3://`, `gs://`, `az://`) behind the part of pathlib's
interface the project uses, and the methods `LocalPath` shares with it (local.py). Keys are literal: joined
as written, never decoded or normalised (`pipeline.storage.location` makes the first one from a URL).

An object is written with one PUT (obstore turns a large one into a multipart upload that completes at once), so
it is complete or absent: no reader ever sees half of one.
"""

import contextlib
import io
import os
from pathlib import PurePosixPath

from pipeline.storage import partial
from pipeline.storage.client import StorageError, TooLarge, client, errors, provider_env, quick
from pipeline.storage.listing import Listing
from pipeline.storage.ranged import RangeFile

SINGLE_PUT = 4 << 30  # bytes: larger objects go up in parts


class ObjectPath(Listing):
    """A key or prefix in an object store, with the pathlib methods the project uses. Folders are prefixes: one
    exists when an object lies below it, and making one is a no-op."""

    __slots__ = ("scheme", "bucket", "key", "options")

    def __init__(self, scheme: str, bucket: str, key: str, options: tuple = ()):
        self.scheme, self.bucket, self.key, self.options = scheme, bucket, key.strip("/"), options

    # -- names ---------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}".rstrip("/")

    __fspath__ = None  # not a local path: code that needs one must ask for `local`

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and (self.scheme, self.bucket, self.key) == (
            other.scheme,
            other.bucket,
            other.key,
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self.bucket, self.key))

    def __truediv__(self, other) -> "ObjectPath":
        """The key below this one, joined as written: never normalised ("a/../b" stays; obstore refuses it)."""
        other = str(other).strip("/")
        key = f"{self.key}/{other}" if self.key and other else self.key or other
        return ObjectPath(self.scheme, self.bucket, key, self.options)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.scheme, self.bucket, str(PurePosixPath(self.key).parent).strip("."), self.options)

    def relative_to(self, other: "ObjectPath") -> PurePosixPath:
        return PurePosixPath(self.key).relative_to(other.key) if other.key else PurePosixPath(self.key)

    def is_relative_to(self, other) -> bool:
        if not isinstance(other, ObjectPath) or (other.scheme, other.bucket) != (self.scheme, self.bucket):
            return False
        return not other.key or self.key == other.key or self.key.startswith(other.key + "/")

    def resolve(self) -> "ObjectPath":
        return self

    def absolute(self) -> "ObjectPath":
        return self

    def as_posix(self) -> str:
        return str(self)

    @property
    def local(self) -> None:
        """No path on this machine: readers that need one fetch through the methods below."""
        return None

    def parallel(self, requests: int) -> int:
        """Threads worth spending on `requests` independent reads: all of them, each waits on the network."""
        return requests

    @property
    def retry_seconds(self) -> float:
        """How long a reader keeps retrying a request that fails (`--storage-option retry_timeout=SECONDS`, default
        120): long enough for a server restart, short enough for a run to end when its bucket is gone."""
        return float(dict(self.options).get("retry_timeout", 120))

    def is_symlink(self) -> bool:
        return False

    @property
    def client(self):
        return client(self.scheme, self.bucket, self.options, provider_env(), quick())

    # -- reading -------------------------------------------------------------------------------------------------
    def read_bytes(self, limit: int | None = None) -> bytes:
        """The object's bytes; TooLarge, before its body is read, if it has more than `limit`."""
        return self.read_meta(limit)[0]

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def read_range(self, start: int, length: int) -> bytes:
        import obstore

        if length <= 0:
            return b""
        return self._ranged(
            lambda: obstore.get_range(self.client, self.key, start=start, length=length).to_bytes(),
            lambda: partial.get(self, start, start + length)[1],
        )

    def read_suffix(self, length: int) -> tuple[int, bytes]:
        """(the object's size, its last `length` bytes) in one request."""
        import obstore

        def fast():
            got = obstore.get(self.client, self.key, options={"range": {"suffix": length}})
            return got.meta["size"], got.bytes().to_bytes()

        return self._ranged(fast, lambda: partial.get(self, suffix=length))

    def read_ranges(self, starts: list[int], lengths: list[int]) -> list[bytes]:
        """Several ranges of one object, fetched together (obstore coalesces close ones)."""
        import obstore

        if not starts:
            return []
        return self._ranged(
            lambda: [g.to_bytes() for g in obstore.get_ranges(self.client, self.key, starts=starts, lengths=lengths)],
            lambda: [partial.get(self, a, a + n)[1] for a, n in zip(starts, lengths, strict=True)],
        )

    def _ranged(self, fast, slow):
        """fast(), a ranged read through obstore; or slow(), the same through signed GETs, for a server that
        answers ranges with 200 (`pipeline.storage.partial`), which the first such answer marks."""
        if not partial.known(self):
            try:
                with errors(self):
                    return fast()
            except StorageError as e:
                if not partial.refuses_partial(e):
                    raise
                partial.mark(self)
        return slow()

    def stat(self):
        import obstore

        with errors(self):
            meta = obstore.head(self.client, self.key)
        return os.stat_result((0o100644, 0, 0, 1, 0, 0, meta["size"], 0, 0, 0))

    def open(self, mode: str = "rb", block: int = 1 << 16):
        if mode != "rb":
            raise ValueError(f"{self}: objects are opened for reading only ('rb'), not {mode!r}")
        return RangeFile(self, self.stat().st_size, block)

    def open_sized(self, block: int = 1 << 16):
        """(a seekable file over the object, read in ranged GETs of `block` bytes, never downloaded whole; its size)."""
        f = self.open("rb", block)
        return f, f.size

    def open_stream(self, buffer: int):
        """The object, read forward in ranged GETs of `buffer` bytes."""
        return io.BufferedReader(self.open("rb", block=0), buffer_size=buffer)

    def file_or_path(self):
        """What a library that takes a path or a file (pyarrow) reads: a file whose every read is one ranged GET of
        exactly the bytes asked for (a footer, a column chunk)."""
        return self.open("rb", block=0)

    def read_regular(self) -> bytes:
        return self.read_bytes()

    def stamp(self) -> int:
        """Changes when the object does (as far as one HEAD tells): its size."""
        return self.stat().st_size

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_file(self) -> bool:
        import obstore

        if not self.key:
            return False
        try:
            with errors(self):
                obstore.head(self.client, self.key)
            return True
        except FileNotFoundError:
            return False

    def is_dir(self) -> bool:
        return any(True for _ in self._objects(1))

    # -- writing -------------------------------------------------------------------------------------------------
    def write_bytes(self, data) -> None:
        import obstore

        with errors(self):  # one PUT up to S3's limit of 5 GB; beyond, a multipart upload (atomic when completed)
            obstore.put(self.client, self.key, data, use_multipart=len(data) > SINGLE_PUT)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_atomic(self, data, sync: bool = True, tmp_dir=None) -> None:
        """One PUT, which makes the object appear whole when it completes (sync and tmp_dir are a disk's)."""
        if callable(data):
            buffer = io.BytesIO()
            data(buffer)
            data = buffer.getbuffer()
        self.write_bytes(b"".join(data) if isinstance(data, list) else data)

    def remove_empty(self) -> None:
        """A prefix without objects is not there: nothing to remove."""

    @contextlib.contextmanager
    def tidy(self, *inner):
        yield self

    def check_writable(self, what: str) -> None:
        """Refuse, in one line and leaving nothing, a prefix where a probe object cannot be put and deleted."""
        from pipeline.common.cli import Refused

        probe = self / "_staging" / ".write-check"
        try:
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)
        except OSError as e:
            raise Refused(f"{what} {self}: cannot write there ({e})") from None

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Prefixes need no making."""

    def unlink(self, missing_ok: bool = False) -> None:
        import obstore

        try:
            with errors(self):
                obstore.delete(self.client, self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def delete_tree(self) -> None:
        """Delete every object below this prefix."""
        self.delete_keys(self.walk_files())

    def delete_keys(self, paths: list["ObjectPath"]) -> None:
        """Delete these objects (of this bucket), a thousand per request."""
        import obstore

        keys = [p.key for p in paths]
        with errors(self):
            for lo in range(0, len(keys), 1000):
                obstore.delete(self.client, keys[lo : lo + 1000])

    def write_new(self, data: bytes, etag: str | None = None) -> str | None:
        """Put `data` only if the object is absent (etag None) or still has `etag`; its new ETag, or None when the
        condition failed. A server that ignores conditions (rclone's, say) accepts every such put: callers check
        what they wrote by reading it back."""
        import obstore
        import obstore.exceptions as ox

        mode = "create" if etag is None else {"e_tag": etag}
        with errors(self):
            try:
                return obstore.put(self.client, self.key, data, mode=mode).get("e_tag") or ""
            except (ox.AlreadyExistsError, ox.PreconditionError):
                return None

    def read_meta(self, limit: int | None = None) -> tuple[bytes, str]:
        """(the object's bytes, its ETag) from one GET; TooLarge, before the body is read, past `limit` bytes."""
        import obstore

        with errors(self):
            got = obstore.get(self.client, self.key)
            if limit is not None and got.meta["size"] > limit:
                raise TooLarge(self, got.meta["size"], limit, got.meta.get("e_tag") or "")
            return got.bytes().to_bytes(), got.meta.get("e_tag") or ""

    def zarr_store(self, read_only: bool = False):
        """zarr-python's own store class for this prefix, which is taken literally (never decoded)."""
        scoped = client(self.scheme, self.bucket, self.options, provider_env(), quick(), prefix=self.key)
        return partial.zarr_store(scoped, self, read_only)
