"""URLs and storage options, as a careless or hostile user writes them: a URL is parsed once into a bucket and a
literal key (or refused in one line), and only known, non-secret storage settings pass, each value checked. Every
credential key that obstore documents is refused, without its value in the message."""

import ast
from pathlib import Path

import obstore
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.storage import location
from pipeline.storage.options import ALLOWED, parse_options, redact

STUBS = Path(obstore.__file__).parent / "_store"
# Settings that authenticate, or say where credentials come from: none may pass as a --storage-option.
CREDENTIAL_WORDS = ("key", "secret", "token", "credential", "password", "sas", "role", "identity", "service_account",
                    "client_id", "tenant", "msi", "object_id", "authority", "bearer", "imds", "metadata", "azure_cli",
                    "web_identity", "container_credentials", "authorization")  # fmt: skip


def obstore_keys() -> set[str]:
    """Every field of obstore's documented store and credential types (S3, GCS, Azure)."""
    keys = set()
    for stub in ("_aws.pyi", "_gcs.pyi", "_azure.pyi"):
        for node in ast.parse((STUBS / stub).read_text()).body:
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "TypedDict" for b in node.bases):
                keys |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return keys


CREDENTIALS = sorted(
    k for k in obstore_keys() if any(w in k for w in CREDENTIAL_WORDS) or k.startswith(("sts_", "fabric_"))
)


def test_the_documented_credentials_are_found():
    assert {
        "secret_access_key",
        "session_token",
        "account_key",
        "service_account_key",
        "sas_key",
        "sse_customer_key_base64",
        "client_secret",
        "bearer_token",
        "access_key_id",
    } <= set(CREDENTIALS)
    assert not set(CREDENTIALS) & set(ALLOWED)


@pytest.mark.parametrize("key", CREDENTIALS)
@pytest.mark.parametrize("form", ["{}", "aws_{}", "google_{}", "azure_{}", "{}".upper(), "AWS_{}"])
def test_every_credential_key_is_refused_without_its_value(key, form):
    name = form.format(key)
    name = name.upper() if form.isupper() else name
    with pytest.raises(ValueError) as refused:
        parse_options([f"{name}=hunter2-SECRET"])
    assert "hunter2" not in str(refused.value) and "\n" not in str(refused.value)


@given(st.text(min_size=1, max_size=30), st.text(max_size=30))
@example("account_key", "x")
@example("endpoint", "http://user:pw@host")
@example("proxy_url", "http://u:p@proxy:3128")
@settings(max_examples=300, deadline=None)
def test_options_pass_by_name_only_and_never_echo_a_value(key, value):
    marked = f"zq{value}qz"  # a value as a secret would be: never repeated by a refusal (a URL's, redacted, is)
    try:
        got = parse_options([f"{key}={marked}"])
    except ValueError as e:
        assert "\n" not in str(e)
        assert marked not in str(e) or (ALLOWED.get(key.strip().lower()) == "url" and "@" not in marked)
        assert "pw@" not in str(e) and "u:p@" not in str(e)
        return
    assert set(got) <= set(ALLOWED)


@pytest.mark.parametrize("pair", ["retry_timeout=inf", "retry_timeout=nan", "retry_timeout=-1", "retry_timeout=0",
                                  "retry_timeout=1e400", "max_retries=-1", "max_retries=1e9", "max_retries=x",
                                  "timeout=inf", "connect_timeout=-5s", "allow_http=maybe",
                                  "endpoint=http://user:S3CRET@host:9000", "endpoint=ftp://host", "endpoint=http://h:99999",
                                  "region=us east", "user_agent=a\nb", "=x", "noequals"])  # fmt: skip
def test_bad_values_are_refused_in_one_line(pair):
    with pytest.raises(ValueError) as refused:
        parse_options([pair])
    assert "\n" not in str(refused.value) and "S3CRET" not in str(refused.value)


@pytest.mark.parametrize("url", ["http://user:pa/ss@h:9000", "http://user:p ss@h", "http://user:p@ss@h:1",
                                 "http://:S3CRET@h", "https://S3CRET@h/x"])  # fmt: skip
def test_a_password_in_an_endpoint_is_never_repeated_however_it_is_spelled(url, monkeypatch):
    for option in ("endpoint", "proxy_url"):
        with pytest.raises(ValueError) as refused:
            parse_options([f"{option}={url}"])
        assert not any(secret in str(refused.value) for secret in ("pa/ss", "p ss", "p@ss", "S3CRET"))
        assert str(refused.value).count("--storage-option") == 1
    from pipeline.storage import StorageError

    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    with pytest.raises(StorageError) as refused:
        location("s3://bkt/x").exists()
    assert not any(secret in str(refused.value) for secret in ("pa/ss", "p ss", "p@ss", "S3CRET"))


def test_good_values_are_normalised():
    got = parse_options(["Region=eu-west-1", "retry_timeout=2min", "max_retries=3", "allow_http=YES",
                         "endpoint_url=http://127.0.0.1:9000", "timeout=30"])  # fmt: skip
    assert got == {"region": "eu-west-1", "retry_timeout": "120", "max_retries": "3", "allow_http": "true",
                   "endpoint": "http://127.0.0.1:9000", "timeout": "30s"}  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "s3://bkt/vic%74im.zarr",
        "s3://bkt/a%2Fb.zarr",
        "s3://b0b/a.zarr#x",
        "s3://bkt/a.zarr?x=1",
        "s3://bkt/run#1/x.zarr",
        "s3://bkt/a//b",
        "s3://bkt/a/../victim",
        "s3://bkt/./a",
        "s3://-bkt/a",
        "s3://b%6Bt/a",
        "s3://bkt:9000/a",
        "s3://u:p@bkt/a",
        "s3:///a",
        "s3://bkt/a\tb",
        "file://mystore.zarr",
        "file://host/abs",
        "file:rel",
        "file:///a%20b",
        "file:///tmp/victim/../x.zarr",
        "file:///tmp/./x.zarr",
        "gs://x_y/../z",
    ],
)
def test_urls_that_would_name_another_key_are_refused(url):
    with pytest.raises(ValueError) as refused:
        location(url)
    assert "\n" not in str(refused.value) and ":p@" not in str(refused.value)


KEY_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)


@given(st.sampled_from(["s3", "gs", "az", "file"]), st.lists(KEY_TEXT, min_size=0, max_size=4))
@example("s3", ["vic%74im.zarr"])
@example("s3", ["a", "..", "b"])
@example("file", ["relative"])
@settings(max_examples=400, deadline=None)
def test_a_url_is_refused_or_its_key_is_exactly_what_was_written(scheme, segments):
    written = "/".join(segments)
    url = f"{scheme}:///{written}" if scheme == "file" else f"{scheme}://bucket-1/{written}"
    try:
        where = location(url)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    if scheme == "file":
        assert str(where) == str(Path("/" + written)) or written.endswith("/")
        return
    assert where.scheme == scheme and where.local is None
    assert where.key == written.removesuffix("/") and str(where) == url.rstrip("/")
    assert not any(c in written for c in "%#?") and ".." not in where.key.split("/")


def test_keys_below_a_prefix_are_joined_as_written():
    root = location("s3://bkt/stores")
    assert (root / "a/../b").key == "stores/a/../b"  # never normalised: obstore refuses such a key
    assert (root / "vic%74im").key == "stores/vic%74im"
    assert str(location("file:///tmp/x")) == "/tmp/x"


def test_a_password_in_a_url_is_hidden():
    assert redact("error at http://user:secret@host:9000/b") == "error at http://***@host:9000/b"


def test_a_path_through_a_missing_folder_makes_only_the_folder_it_names(tmp_path):
    from pipeline.common.cli import make_dir

    make_dir(tmp_path / "new.zarr" / ".." / "y", keep=False)  # a check: nothing is left
    assert not list(tmp_path.iterdir())
    make_dir(tmp_path / "new.zarr" / ".." / "y")
    assert [p.name for p in tmp_path.iterdir()] == ["y"]
