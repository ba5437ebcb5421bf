"""The obstore clients behind `pipeline.storage.objects.ObjectPath`: one per bucket, options, environment and process,
and the one-line errors their failures become.

Credentials come from the provider's standard chain (for S3 the `AWS_*` environment or, with `AWS_PROFILE`, a profile
through boto3); an endpoint from `AWS_ENDPOINT_URL` or `--storage-option endpoint`, never with a password in it. A
403 without a body (a HEAD's) is told apart by one listing, whose error body names the code: refused credentials,
or a missing permission. Inside `first_contact` (a command's checks before it starts) requests give up within
about 20 s, where a running job keeps obstore's budget of 10 retries within 3 minutes to ride out a restart.
"""

import contextlib
import datetime
import functools
import os
import threading

from pipeline.common.cli import Refused
from pipeline.storage.options import check_url, redact, split

QUICK = {"connect_timeout": "5s", "timeout": "10s", "max_retries": 1, "retry_seconds": 15.0}  # `first_contact`
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity")
_QUICK = threading.local()  # set inside `first_contact`


class StorageError(OSError):
    """An object store that cannot be used as asked: missing bucket, refused credentials, no permission."""


class TooLarge(Refused):
    """An object bigger than the reader allows (`read_bytes(limit)`); `size` is its size, `etag` its ETag."""

    def __init__(self, path, size: int, limit: int, etag: str = ""):
        super().__init__(f"{path}: {size} bytes, more than the {limit} it may hold")
        self.size, self.etag = size, etag


@contextlib.contextmanager
def first_contact():
    """Requests made inside give up within about 20 s (`QUICK`): a command's checks before it starts, where an
    endpoint that does not answer is a mistake to report, not a server restart to wait out as a running job does."""
    before = getattr(_QUICK, "on", False)
    _QUICK.on = True
    try:
        yield
    finally:
        _QUICK.on = before


def quick() -> bool:
    return getattr(_QUICK, "on", False)


def provider_env() -> tuple:
    """The environment a client's configuration comes from (a client made before it changed would be stale)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_"))))


@functools.cache
def client(scheme: str, bucket: str, options: tuple, env: tuple = (), quick: bool = False, prefix: str = ""):
    """One obstore client per bucket (and prefix), options, environment and process (clients hold connection
    pools); quick: with the budget of `first_contact`. The prefix is taken literally, never decoded."""
    from obstore.store import AzureStore, GCSStore, S3Store

    config, http, retry = split(dict(options))
    if quick:
        http |= {k: QUICK[k] for k in ("connect_timeout", "timeout")}
        retry = {"max_retries": QUICK["max_retries"]}
        retry["retry_timeout"] = datetime.timedelta(seconds=QUICK["retry_seconds"])
    extra = {}
    if scheme == "s3":
        given = "endpoint" in config
        endpoint = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            try:
                config["endpoint"] = check_url(endpoint, "--storage-option endpoint" if given else "AWS_ENDPOINT_URL")
            except ValueError as e:
                raise StorageError(str(e)) from None
            if endpoint.startswith("http://"):
                http["allow_http"] = "true"
        if os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            extra["credential_provider"] = _profile()
    store = {"s3": S3Store, "gs": GCSStore, "az": AzureStore}[scheme]
    return store(bucket, prefix=prefix or None, config=config, client_options=http, retry_config=retry or None,
                 **extra)  # fmt: skip


def _profile():
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError as e:
        raise StorageError("AWS_PROFILE needs boto3 to read the AWS configuration files: pip install boto3") from e
    return Boto3CredentialProvider()


class _Errors:
    """A context that turns obstore's errors into FileNotFoundError (a missing object) or StorageError (one line,
    with any password of a URL in it hidden)."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or not type(error).__module__.startswith("obstore"):
            return False
        import obstore.exceptions as ox

        text = redact(" ".join(str(error).split()))
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            why = "no such bucket"
        elif isinstance(error, FileNotFoundError | ox.NotFoundError):
            raise FileNotFoundError(2, "no such object", str(self.path)) from None
        elif isinstance(error, ox.UnauthenticatedError) or any(code in text for code in CREDENTIAL_CODES):
            why = "the credentials were refused (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)"
        elif isinstance(error, ox.PermissionDeniedError) or "AccessDenied" in text:
            why = "permission denied"
            if _credentials_refused(self.path):  # a HEAD's 403 has no body to say which
                why = "the credentials were refused (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)"
        elif "timed out" in text.lower() or "timeout" in text.lower() or "connection refused" in text.lower():
            why = f"the endpoint does not answer ({text[:160]})"
        else:
            why = f"{type(error).__name__}: {text[:200]}"
        raise StorageError(f"{self.path}: {why}") from None


def errors(path) -> _Errors:
    return _Errors(path)


def _credentials_refused(path) -> bool:
    """Whether a listing below the path is refused for the credentials (its error body names the code)."""
    import obstore

    try:
        obstore.list_with_delimiter(path.client, prefix=path.key or None)
    except Exception as e:  # noqa: BLE001 - any refusal: its text decides
        return any(code in str(e) for code in CREDENTIAL_CODES)
    return False
