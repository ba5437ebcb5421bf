"""The Fréchet distance against independent computations, the feature statistics, and where the Inception's weights
come from: clean-fid's own download (through a local server standing in for its URL), a file, or a refusal."""

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from pipeline.common.cli import Refused
from tests.training.fidnet import write
from training import fid


def reference_distance(mu1, s1, mu2, s2) -> float:
    """FID as pytorch-fid and clean-fid write it: scipy's sqrtm of the product, its real part."""
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * root))


def gaussian(rng, d: int, rank: int | None = None):
    a = rng.normal(size=(d, rank or 2 * d))
    return rng.normal(size=d) * 3, a @ a.T / (rank or 2 * d)


@pytest.mark.parametrize("d", [2, 16, 128])
def test_the_frechet_distance_matches_scipys_sqrtm_on_known_gaussians(d):
    rng = np.random.default_rng(d)
    mu1, s1 = gaussian(rng, d)
    mu2, s2 = gaussian(rng, d)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference_distance(mu1, s1, mu2, s2), rel=1e-9)


def test_the_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(1)
    v1, v2 = rng.uniform(0.1, 4, 50), rng.uniform(0.1, 4, 50)
    mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
    closed = np.square(mu1 - mu2).sum() + np.square(np.sqrt(v1) - np.sqrt(v2)).sum()
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-12)
    shift = fid.frechet_distance(mu1, np.diag(v1), mu1 + 2.0, np.diag(v1))
    assert shift == pytest.approx(4.0 * 50, rel=1e-12)  # equal covariances: the squared distance of the means


def test_rank_deficient_covariances_fewer_images_than_features_still_agree():
    rng = np.random.default_rng(2)
    mu1, s1 = gaussian(rng, 64, rank=20)
    mu2, s2 = gaussian(rng, 64, rank=30)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference_distance(mu1, s1, mu2, s2), rel=1e-6)


def test_statistics_built_batch_by_batch_are_numpys_and_a_set_is_at_distance_zero_from_itself(tmp_path):
    from tests.conftest import photo_batch

    rgb, _ = photo_batch(9, 96)
    net = fid.Extractor(fid.Weights(write(tmp_path / "net.pt"), "x", False, "file"))
    feats = net(rgb)
    moments = fid.Moments()
    for s in (slice(0, 4), slice(4, 5), slice(5, 9)):
        moments.add(feats[s])
    mu, sigma = moments.stats()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-6, atol=1e-9)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    other = fid.Moments()
    other.add(net(rgb[:, ::-1]))  # the same photos upside down: another set, a positive distance
    assert fid.frechet_distance(mu, sigma, *other.stats()) > 1e-6


def test_saved_statistics_answer_only_their_key(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    fid.save_stats(tmp_path / "s.npz", mu, sigma, 7, "key-a")
    got = fid.load_stats(tmp_path / "s.npz", "key-a")
    assert got[2] == 7 and np.array_equal(got[0], mu) and np.array_equal(got[1], sigma) and got[3] == ""
    assert fid.load_stats(tmp_path / "s.npz", "key-b") is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert fid.load_stats(tmp_path / "bad.npz") is None
    assert fid.main([str(tmp_path / "s.npz"), str(tmp_path / "s.npz")]) == 0


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COLORIZE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_without_weights_or_a_network_the_measure_refuses_saying_how_to_get_them(cache, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: no network, at once
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(Refused) as e:
        fid.resolve_weights(None)
    message = str(e.value)
    assert "\n" not in message and "--fid-weights FILE" in message and fid.WEIGHTS in message
    assert not (cache / "fid" / fid.WEIGHTS).exists()  # no partial file left to be trusted later


@pytest.mark.parametrize("content", [b"", b"\x00" * 1000, b"PK\x03\x04 not really a zip"])
def test_a_file_that_is_not_the_torchscript_inception_is_refused_in_one_line(tmp_path, cache, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    weights = fid.resolve_weights(str(path))
    assert not weights.reference
    with pytest.raises(Refused) as e:
        fid.Extractor(weights)
    assert "\n" not in str(e.value) and "TorchScript Inception" in str(e.value)


def test_a_state_dict_is_refused_too(tmp_path, cache):
    import torch

    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "pt_inception.pth")
    with pytest.raises(Refused):
        fid.Extractor(fid.resolve_weights(str(tmp_path / "pt_inception.pth")))


def test_clean_fids_own_download_is_cached_and_trusted_and_the_same_file_given_later_is_recognised(
    tmp_path, cache, monkeypatch
):
    from cleanfid import downloads_helper

    served = tmp_path / "served"
    served.mkdir()
    write(served / fid.WEIGHTS, seed=3)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{fid.WEIGHTS}"
        monkeypatch.setattr(downloads_helper, "inception_url", url)
        got = fid.resolve_weights(None)
        assert got.reference and got.origin == "download"
        assert got.path == cache / "fid" / fid.WEIGHTS
        assert got.sha256 == fid.sha256(served / fid.WEIGHTS)
        server.shutdown()  # the second time it comes from the cache
        assert fid.resolve_weights(None).sha256 == got.sha256
    finally:
        server.server_close()
    copy = tmp_path / "copy.pt"
    copy.write_bytes((served / fid.WEIGHTS).read_bytes())
    assert fid.resolve_weights(str(copy)).reference
    write(tmp_path / "other.pt", seed=4)
    assert not fid.resolve_weights(str(tmp_path / "other.pt")).reference
