"""Where data lives: a local folder, or a prefix in object storage (`s3://`, `gs://`, `az://`), behind the part of
pathlib's interface the project uses, so that one code path reads sources and writes stores in both.

`location(text, options)` gives a `LocalPath` (a `pathlib.Path`) for a plain path or a `file://` URL, and an
`ObjectPath` for an object store URL, with the storage options it was given: they travel with it and every path
derived from it. Both have the same methods, so that no caller outside this package asks which one it holds.
Object stores go through obstore (the Rust `object_store` crate), one client per bucket and process.
Credentials come from the provider's standard chain: for S3 the environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`) or, with `AWS_PROFILE`, a profile of the AWS
configuration files (through boto3). An endpoint comes from `AWS_ENDPOINT_URL`; a plain `http://` one is allowed
because it says so. `--storage-option KEY=VALUE` passes the non-secret settings that
`pipeline.storage.options` allows by name: credentials stay in the environment, out of every flag, log,
store attribute, checkpoint and saved config.

A URL is parsed once, here, into a bucket and a key that is used literally from then on: never decoded, never
normalised. `%`, `#` and `?`, which a URL parser decodes or cuts off, are refused in a URL, as are empty, `.` and
`..` segments and a `file://` URL that is not absolute.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.common.cli import Refused
from pipeline.storage.client import StorageError, TooLarge, first_contact
from pipeline.storage.local import LocalPath, NotRegular
from pipeline.storage.objects import ObjectPath
from pipeline.storage.options import parse_options, redact

__all__ = ["LocalPath", "NotRegular", "StorageError", "TooLarge", "first_contact", "location", "parse_options"]
REMOTE_SCHEMES = ("s3", "gs", "az")
BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,221}")  # wider than S3's rules: servers such as rclone's differ
NOT_IN_URLS = "%#?"  # decoded or cut off by a URL parser: the key would name another object


def is_url(text: str | os.PathLike) -> bool:
    return isinstance(text, str) and urlsplit(text).scheme in (*REMOTE_SCHEMES, "file")


def add_storage_option(parser) -> None:
    """The `--storage-option KEY=VALUE` flag of every command that takes a URL."""
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an object store setting (region, endpoint, ...), repeatable; credentials come from "
                        "the environment")  # fmt: skip


def _refused(text: str, why: str) -> Refused:
    return Refused(f"{redact(text)!r}: {why}")


def location(text: str | os.PathLike, options: dict | None = None):
    """A `LocalPath` (plain paths, absolute `file://` URLs) or an `ObjectPath` (object store URLs, with `options`:
    checked ones, from `parse_options`); ValueError, in one line, for a URL whose key would not be the text as
    written. A location given is returned as it is, its options kept."""
    if isinstance(text, LocalPath | ObjectPath):
        return text
    if isinstance(text, Path):
        return LocalPath(text)
    text = str(text)
    parts = urlsplit(text)
    if parts.scheme not in (*REMOTE_SCHEMES, "file"):
        if "://" in text:
            raise Refused(f"{text}: unsupported scheme {parts.scheme!r} (s3://, gs://, az://, file:// or a path)")
        return LocalPath(text)
    if any(c in text for c in NOT_IN_URLS) or not text.isprintable():
        raise _refused(text, "'%', '#', '?' and unprintable characters are not taken in a URL, where they would make "
                       "the key another than the one written; use a name without them")  # fmt: skip
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise _refused(text, "a file:// URL must be absolute (file:///folder/...); or give a plain path")
        if any(seg in (".", "..") for seg in parts.path.split("/")):
            raise _refused(text, "'.' and '..' segments are not taken in a URL; give the path they lead to")
        return LocalPath(parts.path)
    if "@" in parts.netloc:
        raise Refused(f"{parts.scheme}://...: credentials never go in a URL; set them in the environment")
    if not parts.netloc:
        raise Refused(f"{text}: no bucket")
    if not BUCKET.fullmatch(parts.netloc):
        raise _refused(text, f"{parts.netloc!r} is not a bucket name (letters, digits, '.', '-', '_')")
    key = parts.path.removeprefix("/").removesuffix("/")  # one slash after the bucket, one at the end: no more
    if key and any(seg in ("", ".", "..") for seg in key.split("/")):
        raise _refused(text, "empty, '.' and '..' segments are not taken in a URL (a key is used as written)")
    opts = tuple(sorted((options or {}).items()))
    return ObjectPath(parts.scheme, parts.netloc, key, opts)


def reachable(*places, options: dict | None = None) -> None:
    """Ask each URL among `places` whether it exists (call inside `first_contact`: within seconds), so that an
    endpoint that does not answer, or refuses the credentials, is reported before a command starts its work."""
    for place in places:
        if isinstance(place, ObjectPath) or is_url(str(place)):
            location(place, options).exists()
