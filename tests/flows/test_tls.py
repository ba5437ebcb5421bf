"""The flow on a Dask cluster secured with TLS and mutual certificates, as across machines: a real scheduler and
workers started with certificates this test makes, a real Prefect server; a client without a certificate the
cluster trusts is refused in one line, and one with it builds the store."""

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from flows.server import local_stack
from pipeline.build import build_store
from pipeline.config import PreprocessConfig
from tests.conftest import free_port, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.dali]


def certificate(folder: Path, name: str, issuer=None) -> tuple[Path, Path]:
    """(cert, key) PEM files: a CA of its own when issuer is None, else signed by issuer's (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    if issuer is None:
        sign_key, issuer_name = key, subject
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer[0].read_bytes())
        sign_key, issuer_name = serialization.load_pem_private_key(issuer[1].read_bytes(), None), ca_cert.subject
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    )  # fmt: skip
    cert = builder.sign(sign_key, hashes.SHA256())
    paths = folder / f"{name}.pem", folder / f"{name}.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, CA, the flow's (cert, key), a stranger's (cert, key), Prefect's environment)."""
    tmp = tmp_path_factory.mktemp("tls")
    ca = certificate(tmp, "ca")
    node, flow_cert = certificate(tmp, "node", ca), certificate(tmp, "flow", ca)
    stranger = certificate(tmp, "stranger", certificate(tmp, "other-ca"))
    tls = ["--tls-ca-file", str(ca[0]), "--tls-cert", str(node[0]), "--tls-key", str(node[1])]
    port = free_port()
    bin_dir = Path(sys.executable).parent
    with local_stack(tmp / "prefect", serve=False) as env:
        env = env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        scheduler = subprocess.Popen([bin_dir / "dask", "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                                      "--port", str(port), "--no-dashboard", *tls], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_port(port)
        address = f"tls://127.0.0.1:{port}"
        workers = subprocess.Popen([bin_dir / "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                                    "--no-dashboard", "--host", "127.0.0.1", *tls], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            yield address, ca, flow_cert, stranger, env
        finally:
            for proc in (workers, scheduler):
                proc.terminate()
                proc.wait(30)


def run(source, store, *extra, env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flows.preprocess", str(source), str(store), "--part-images", "8",
           "--shard-images", "4", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_a_client_without_the_clusters_certificate_is_refused(cluster, mixed_source, tmp_path):
    address, ca, _, stranger, env = cluster
    source, _ = mixed_source
    for extra in ([], ["--dask-security", f"ca={ca[0]},cert={stranger[0]},key={stranger[1]}"]):
        r = run(source, tmp_path / "s.zarr", "--dask-address", address, *extra, env=env)
        assert r.returncode == 2, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "s.zarr").exists()


def test_a_client_with_it_builds_the_store(cluster, mixed_source, tmp_path):
    address, ca, flow_cert, _, env = cluster
    source, _ = mixed_source
    security = f"ca={ca[0]},cert={flow_cert[0]},key={flow_cert[1]}"
    r = run(source, tmp_path / "s.zarr", "--dask-address", address, "--dask-security", security, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    build_store(PreprocessConfig(source=str(source), part_images=8, shard_images=4), tmp_path / "serial.zarr")
    got, want = (zarr.open_group(str(tmp_path / name), mode="r") for name in ("s.zarr", "serial.zarr"))
    for name in ("L", "bins", "label", "slots", "prior"):
        assert np.array_equal(got[name][:], want[name][:]), name
