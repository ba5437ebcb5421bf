"""Where data lives: a local folder, or a prefix in object storage (`s3://`, `gs://`, `az://`), behind the part of
pathlib's interface the project uses, so that one code path reads sources and writes stores in both.

`location(text)` gives a `pathlib.Path` for a plain path or a `file://` URL, and an `ObjectPath` for an object
store URL. Object stores go through obstore (the Rust `object_store` crate), one client per bucket and process.
Credentials come from the provider's standard chain: for S3 the environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`) or, with `AWS_PROFILE`, a profile of the AWS
configuration files (through boto3). An endpoint comes from `AWS_ENDPOINT_URL`; a plain `http://` one is allowed
because it says so. `storage_options` (`--storage-option KEY=VALUE`) pass anything else to obstore, never a
secret: credentials stay in the environment, out of every flag, log, store attribute and saved config.

An object is written with one PUT (obstore turns a large one into a multipart upload that completes at once), so
it is complete or absent: no reader ever sees half of one.
"""

import datetime
import fnmatch
import functools
import io
import os
import posixpath
import threading
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pipeline.common import partial

REMOTE_SCHEMES = ("s3", "gs", "az")
SECRET_WORDS = ("secret", "token", "password", "access_key", "key_id", "sas", "credential", "private")


SINGLE_PUT = 4 << 30  # bytes: larger objects go up in parts


class StorageError(OSError):
    """An object store that cannot be used as asked: missing bucket, refused credentials, no permission."""


def is_url(text: str | os.PathLike) -> bool:
    return isinstance(text, str) and urlsplit(text).scheme in (*REMOTE_SCHEMES, "file")


def is_remote(path) -> bool:
    return isinstance(path, ObjectPath)


def parse_options(pairs) -> dict[str, str]:
    """{key: value} of `KEY=VALUE` texts; credentials are refused, because they belong in the environment."""
    options = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ValueError(f"--storage-option {pair!r}: expected KEY=VALUE")
        if any(word in key for word in SECRET_WORDS):
            raise ValueError(
                f"--storage-option {key}: credentials come from the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...), never from a flag that a log or config could keep"
            )
        options[key] = value
    return options


_OPTIONS: dict[str, str] = {}  # this process's storage options (`configure`)


def configure(options: dict) -> None:
    """Set this process's storage options (from `--storage-option`, or a task's parameters on a worker)."""
    _OPTIONS.clear()
    _OPTIONS.update(options)


def options_in_use() -> dict:
    """This process's storage options, to hand to workers: never a credential (`parse_options` refuses them)."""
    return dict(_OPTIONS)


def retry_seconds() -> float:
    """How long a reader keeps retrying a request that fails (`--storage-option retry_timeout=SECONDS`, default
    120): long enough for a server restart, short enough for a run to end when its bucket is gone."""
    return float(_OPTIONS.get("retry_timeout", 120))


def add_storage_option(parser) -> None:
    """The `--storage-option KEY=VALUE` flag of every command that takes a URL."""
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an object store setting (region, endpoint, ...), repeatable; credentials come from "
                        "the environment")  # fmt: skip


def location(text: str | os.PathLike, options: dict | None = None):
    """A `Path` (plain paths, `file://` URLs) or an `ObjectPath` (object store URLs, with `options` or this
    process's)."""
    if isinstance(text, ObjectPath | Path):
        return text
    text = str(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.scheme not in REMOTE_SCHEMES:
        if "://" in text:
            raise ValueError(f"{text}: unsupported scheme {parts.scheme!r} (s3://, gs://, az://, file:// or a path)")
        return Path(text)
    if parts.username or parts.password:
        raise ValueError(f"{parts.scheme}://...: credentials never go in a URL; set them in the environment")
    if not parts.netloc:
        raise ValueError(f"{text}: no bucket")
    opts = tuple(sorted((_OPTIONS if options is None else options).items()))
    return ObjectPath(parts.scheme, parts.netloc, parts.path.strip("/"), opts)


def _provider_env() -> tuple:
    """The environment a client's configuration comes from (a client made before it changed would be stale)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_"))))


@functools.cache
def _client(scheme: str, bucket: str, options: tuple, env: tuple = ()):
    """One obstore client per bucket, options, environment and process (clients hold connection pools)."""
    from obstore.store import from_url

    config = dict(options)
    client, retry = {}, _retry(config)
    if scheme == "s3":
        endpoint = config.get("endpoint") or config.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            config["endpoint"] = endpoint
            config.pop("endpoint_url", None)
            if endpoint.startswith("http://"):
                client["allow_http"] = True
        if os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            return from_url(f"s3://{bucket}", config=config, client_options=client, retry_config=retry,
                            credential_provider=_profile())  # fmt: skip
    return from_url(f"{scheme}://{bucket}", config=config, client_options=client, retry_config=retry)


def _retry(config: dict) -> dict | None:
    """obstore's retry settings from the `max_retries` and `retry_timeout` (seconds) storage options, taken out of
    config; None keeps obstore's own (10 retries with exponential backoff, within 3 minutes)."""
    retry = {}
    try:
        if "max_retries" in config:
            retry["max_retries"] = int(config.pop("max_retries"))
        if "retry_timeout" in config:
            retry["retry_timeout"] = datetime.timedelta(seconds=float(config.pop("retry_timeout")))
    except ValueError as e:
        raise ValueError(f"--storage-option max_retries / retry_timeout: not a number ({e})") from None
    return retry or None


def _profile():
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError as e:
        raise StorageError("AWS_PROFILE needs boto3 to read the AWS configuration files: pip install boto3") from e
    return Boto3CredentialProvider()


def _errors(path: "ObjectPath"):
    """A context that turns obstore's errors into FileNotFoundError (a missing object) or StorageError (one line)."""
    return _Errors(path)


class _Errors:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or not type(error).__module__.startswith("obstore"):
            return False
        import obstore.exceptions as ox

        text = " ".join(str(error).split())
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            why = "no such bucket"
        elif isinstance(error, FileNotFoundError | ox.NotFoundError):
            raise FileNotFoundError(2, "no such object", str(self.path)) from None
        elif isinstance(error, ox.UnauthenticatedError) or any(
            code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")
        ):
            why = "the credentials were refused (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)"
        elif isinstance(error, ox.PermissionDeniedError) or "AccessDenied" in text:
            why = "permission denied"
        else:
            why = f"{type(error).__name__}: {text[:200]}"
        raise StorageError(f"{self.path}: {why}") from None


class ObjectPath:
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
        key = posixpath.normpath(f"{self.key}/{other}" if self.key else str(other))  # "a/../b" is "b"
        return ObjectPath(self.scheme, self.bucket, "" if key == "." else key, self.options)

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
    def client(self):
        return _client(self.scheme, self.bucket, self.options, _provider_env())

    # -- reading -------------------------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        import obstore

        with _errors(self):
            return obstore.get(self.client, self.key).bytes().to_bytes()

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

    def sizes(self) -> dict[str, int]:
        """{key below this prefix: size} of every object below it (one listing)."""
        import obstore

        out = {}
        with _errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=10_000):
                out |= {o["path"][len(self._prefix()) :]: o["size"] for o in batch}
        return out

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
        answers ranges with 200 (`pipeline.common.partial`), which the first such answer marks."""
        if not partial.known(self):
            try:
                with _errors(self):
                    return fast()
            except StorageError as e:
                if not partial.refuses_partial(e):
                    raise
                partial.mark(self)
        return slow()

    def stat(self):
        import obstore

        with _errors(self):
            meta = obstore.head(self.client, self.key)
        return os.stat_result((0o100644, 0, 0, 1, 0, 0, meta["size"], 0, 0, 0))

    def open(self, mode: str = "rb", block: int = 1 << 16):
        if mode != "rb":
            raise ValueError(f"{self}: objects are opened for reading only ('rb'), not {mode!r}")
        return RangeFile(self, self.stat().st_size, block)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_file(self) -> bool:
        import obstore

        if not self.key:
            return False
        try:
            with _errors(self):
                obstore.head(self.client, self.key)
            return True
        except FileNotFoundError:
            return False

    def is_dir(self) -> bool:
        import obstore

        with _errors(self):
            stream = obstore.list(self.client, prefix=self._prefix(), chunk_size=1)
            for batch in stream:
                return len(batch) > 0
        return False

    def iterdir(self):
        """The objects and prefixes directly below this one."""
        listing = self._listing()
        names = [p.rstrip("/").rpartition("/")[2] for p in listing["common_prefixes"]]
        names += [o["path"].rpartition("/")[2] for o in listing["objects"]]
        return [self / n for n in sorted(set(names)) if n]

    def subfolders(self) -> list[str]:
        """The names of the prefixes directly below this one (one listing)."""
        return [p.rstrip("/").rpartition("/")[2] for p in self._listing()["common_prefixes"]]

    def iterfiles(self) -> list["ObjectPath"]:
        """The objects directly below this prefix (one listing)."""
        return [ObjectPath(self.scheme, self.bucket, o["path"], self.options) for o in self._listing()["objects"]]

    def _listing(self) -> dict:
        import obstore

        with _errors(self):
            return obstore.list_with_delimiter(self.client, prefix=self._prefix() or None)

    def walk_files(self) -> list["ObjectPath"]:
        """Every object below this prefix, sorted by key."""
        import obstore

        keys = []
        with _errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=10_000):
                keys += [o["path"] for o in batch]
        return [ObjectPath(self.scheme, self.bucket, k, self.options) for k in sorted(keys)]

    def has_objects(self) -> bool:
        """Whether any non-hidden object lies below this prefix."""
        import obstore

        with _errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=1000):
                for o in batch:
                    if not any(part.startswith(".") for part in o["path"][len(self._prefix()) :].split("/")):
                        return True
        return False

    def glob(self, pattern: str):
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def _prefix(self) -> str:
        return f"{self.key}/" if self.key else ""

    # -- writing -------------------------------------------------------------------------------------------------
    def write_bytes(self, data) -> None:
        import obstore

        with _errors(self):  # one PUT up to S3's limit of 5 GB; beyond, a multipart upload (atomic when completed)
            obstore.put(self.client, self.key, data, use_multipart=len(data) > SINGLE_PUT)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Prefixes need no making."""

    def unlink(self, missing_ok: bool = False) -> None:
        import obstore

        try:
            with _errors(self):
                obstore.delete(self.client, self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def delete_tree(self) -> None:
        """Delete every object below this prefix."""
        import obstore

        keys = [p.key for p in self.walk_files()]
        with _errors(self):
            for lo in range(0, len(keys), 1000):
                obstore.delete(self.client, keys[lo : lo + 1000])

    def zarr_store(self, read_only: bool = False):
        """zarr-python's own store class for this prefix."""
        from obstore.store import from_url

        client = self.client
        scoped = from_url(str(self), config=client.config, client_options=client.client_options,
                          credential_provider=client.credential_provider)  # fmt: skip
        return partial.zarr_store(scoped, self, read_only)


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over one object, read in blocks of `block` bytes with ranged GETs (tarfile lists
    a shard through it, header by header, without downloading the members it skips)."""

    def __init__(self, path: ObjectPath, size: int, block: int = 1 << 16):
        super().__init__()
        self.path, self.size, self.block, self.pos = path, size, block, 0
        self._cache: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), max(0, self.size - self.pos))
        got = 0
        while got < n:
            k, at = divmod(self.pos + got, self.block)
            data = self._block(k)
            take = min(n - got, len(data) - at)
            if take <= 0:
                break
            buffer[got : got + take] = data[at : at + take]
            got += take
        self.pos += got
        return got

    def _block(self, k: int) -> bytes:
        with self._lock:
            if k not in self._cache:
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                start = k * self.block
                self._cache[k] = self.path.read_range(start, min(self.block, self.size - start))
            return self._cache[k]
