"""The object store settings a user may give (`--storage-option KEY=VALUE`): allowed by name, never blocked by name.

Only settings that are known and never secret pass, each value checked for its kind; everything else, a
credential above all (`secret_access_key`, `account_key`, `service_account_key`, `sse_customer_key_base64`, ...),
is refused in one line that does not repeat the value. Credentials, and any setting not listed here, come from the
provider's environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), which obstore reads itself and nothing here records. So
what `parse_options` returns may go into a config file, a checkpoint and a Prefect parameter.
"""

import math
import re
from urllib.parse import urlsplit

from pipeline.common.cli import Refused

# name -> kind. Store settings (obstore's S3Config, GCSConfig and AzureConfig) that configure, never authenticate.
STORE = {
    "region": "name", "default_region": "name", "endpoint": "url", "base_url": "url",
    "virtual_hosted_style_request": "bool", "unsigned_payload": "bool", "checksum_algorithm": "name",
    "conditional_put": "name", "copy_if_not_exists": "name", "disable_tagging": "bool", "disable_bulk_delete": "bool",
    "request_payer": "bool", "s3_express": "bool", "skip_signature": "bool", "server_side_encryption": "name",
    "account_name": "name",
    "use_emulator": "bool", "use_fabric_endpoint": "bool",
}  # fmt: skip
# HTTP client settings (obstore's ClientConfig).
CLIENT = {
    "allow_http": "bool", "allow_invalid_certificates": "bool", "connect_timeout": "duration", "timeout": "duration",
    "pool_idle_timeout": "duration", "pool_max_idle_per_host": "count", "http1_only": "bool", "http2_only": "bool",
    "proxy_url": "url", "proxy_excludes": "text", "user_agent": "text", "randomize_addresses": "bool",
}  # fmt: skip
# This project's retry budget (obstore's RetryConfig; the store reader retries for retry_timeout too).
RETRY = {"max_retries": "retries", "retry_timeout": "seconds"}
ALIASES = {"endpoint_url": "endpoint"}
ALLOWED = STORE | CLIENT | RETRY
MAX_SECONDS = 86400.0  # a day: longer than any wait a run should make before it says why
MAX_RETRIES = 100
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/+=-]{0,127}")
_SECONDS = {None: 1.0, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _bool(text: str) -> str:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return "true"
    if value in ("false", "0", "no", "off"):
        return "false"
    raise Refused("expected true or false")


def _seconds(text: str) -> float:
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise Refused("expected seconds, e.g. 30 or 30s or 2min")
    value = float(m.group(1)) * _SECONDS[m.group(2)]
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise Refused(f"expected more than 0 and at most {MAX_SECONDS:.0f} seconds")
    return value


def _count(text: str, high: int) -> str:
    if not text.strip().isdigit() or int(text) > high:
        raise Refused(f"expected a whole number from 0 to {high}")
    return str(int(text))


def check_url(text: str, what: str = "the endpoint") -> str:
    """An http(s) URL of a server. One with an `@` anywhere (a user name or password, however it is spelled) is
    refused, and a refusal never repeats the URL, which may hold a password."""
    if "@" in text:
        raise Refused(f"{what} holds an '@' (a user name or password?); credentials go in the environment")
    parts = urlsplit(text.strip())
    try:
        port_ok = parts.port is None or 0 < parts.port
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or not port_ok:
        raise Refused(f"{what}: expected http(s)://HOST[:PORT][/PATH] with a port from 1 to 65535")
    if not text.isprintable() or any(c.isspace() for c in text.strip()):
        raise Refused(f"{what}: expected a URL without spaces or unprintable characters")
    return text.strip()


def redact(text: str) -> str:
    """Text with every `user:password@` of a URL in it (up to the last `@` of a run without spaces) as `***@`."""
    return re.sub(r"(?<=//)\S*@", "***@", str(text))


def _value(key: str, value: str) -> str:
    kind = ALLOWED[key]
    if kind == "bool":
        return _bool(value)
    if kind in ("duration", "seconds"):
        seconds = _seconds(value)
        return f"{seconds:g}s" if kind == "duration" else f"{seconds:g}"
    if kind == "retries":
        return _count(value, MAX_RETRIES)
    if kind == "count":
        return _count(value, 1 << 16)
    if kind == "url":
        return check_url(value, "the URL")
    if kind == "name" and not _NAME.fullmatch(value):
        raise Refused("expected a name (letters, digits and _.:/+=-)")
    if not value.isprintable() or len(value) > 256:
        raise Refused("expected printable text of at most 256 characters")
    return value


def parse_options(pairs) -> dict[str, str]:
    """{key: value} of `KEY=VALUE` texts: known, non-secret settings only, each value checked and normalised;
    ValueError naming the key (never the value, which may be a secret given by mistake) for anything else."""
    options = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        key = key.strip().lower()
        key = ALIASES.get(key, key)
        if not sep or not key:
            raise Refused("--storage-option: expected KEY=VALUE")
        if key not in ALLOWED:
            shown = key if _NAME.fullmatch(key) and len(key) <= 64 else "(unprintable)"
            raise Refused(
                f"--storage-option {shown}: not a setting this project passes on. Credentials and other settings "
                "come from the provider's environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, "
                "AZURE_STORAGE_ACCOUNT_KEY, ...); allowed here: docs/security.md"
            )
        try:
            options[key] = _value(key, value)
        except ValueError as e:
            raise Refused(f"--storage-option {key}: {e}") from None
    return options


def split(options: dict) -> tuple[dict, dict, dict]:
    """(store config, client options, retry config) of checked options, as obstore's stores take them."""
    import datetime

    config = {k: v for k, v in options.items() if k in STORE}
    client = {k: v for k, v in options.items() if k in CLIENT}
    retry = {}
    if "max_retries" in options:
        retry["max_retries"] = int(options["max_retries"])
    if "retry_timeout" in options:
        retry["retry_timeout"] = datetime.timedelta(seconds=float(options["retry_timeout"]))
    return config, client, retry
