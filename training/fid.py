"""Fréchet Inception Distance as the field computes it: clean-fid's TorchScript Inception (the TensorFlow graph of
2015-12-05 that TTUR's FID runs, converted by NVIDIA), its resizing, and the Fréchet distance of the two sets'
Gaussians in float64.

    python -m training.fid A.npz B.npz      # the distance of two saved statistics (mu, sigma)

The weights come from clean-fid's own download (cached) or from a file (`--fid-weights`); without either the
measure refuses in one line. A network other than the one clean-fid downloads (a file whose SHA-256 no download
here recorded) gives a distance that is reported as unverified, never as an FID to set beside published ones.
Why clean-fid, and which papers' numbers each mode matches: docs/evaluation.md.
"""

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.cli import Refused

WEIGHTS = "inception-2015-12-05.pt"  # clean-fid's file name for the network
MODES = {"legacy_tensorflow": "resized inside the network as TTUR's TensorFlow FID does",
         "clean": "resized to 299 by PIL's bicubic filter with antialiasing (clean-fid's own mode)"}  # fmt: skip
DIM = 2048
MAX_WEIGHTS = 1 << 30  # bytes of a weights file: the real one is about 95 MB
BATCH = 16


def cache_dir() -> Path:
    """Where downloaded weights and reference statistics live: $COLORIZE_CACHE, else ~/.cache/colorize."""
    return Path(os.environ.get("COLORIZE_CACHE") or Path.home() / ".cache" / "colorize")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Weights:
    """The Inception's file, its SHA-256, and whether it is the network clean-fid downloads (`reference`)."""

    path: Path
    sha256: str
    reference: bool
    origin: str  # "download" or "file"


def resolve_weights(given: str | None) -> Weights:
    """The weights to use: `given` (a local file), else the cached download, else clean-fid's download now.
    Refused, in one line that says how to get them, when none can be had."""
    from pipeline.common.extras import require

    require("fid", "FID")
    folder = cache_dir() / "fid"
    record = folder / f"{WEIGHTS}.sha256"  # written by a download here: what the reference file hashes to
    known = record.read_text().strip() if record.is_file() else None
    if given:
        path = Path(given)
        if not path.is_file():
            raise Refused(f"--fid-weights {given}: no such file")
        if path.stat().st_size > MAX_WEIGHTS:
            raise Refused(f"--fid-weights {given}: {path.stat().st_size:,} bytes, larger than any Inception")
        digest = sha256(path)
        return Weights(path, digest, digest == known, "file")
    cached = folder / WEIGHTS
    if not cached.is_file():
        _download(folder)
    return Weights(cached, sha256(cached), True, "download")


def _download(folder: Path) -> None:
    """clean-fid's own download, into a scratch folder first: an interrupted one leaves no file to trust."""
    from cleanfid import downloads_helper

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        try:
            got = Path(downloads_helper.check_download_inception(fpath=scratch))
        except OSError as e:  # urllib's URLError and HTTPError are OSErrors
            raise Refused(
                f"FID needs clean-fid's Inception weights and {downloads_helper.inception_url} cannot be fetched "
                f"({getattr(e, 'reason', e)}): download {WEIGHTS} where there is a network and pass "
                "--fid-weights FILE, or --no-fid"
            ) from None
        (folder / f"{WEIGHTS}.sha256").write_text(sha256(got) + "\n")
        os.replace(got, folder / WEIGHTS)


class Extractor:
    """2048-d pool features of 8-bit RGB images (B, H, W, 3), through clean-fid's wrapper of the TorchScript."""

    def __init__(self, weights: Weights, mode: str = "legacy_tensorflow", device="cpu"):
        import torch
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        if mode not in MODES:
            raise Refused(f"--fid-mode {mode}: one of {', '.join(MODES)}")
        self.weights, self.mode, self.device = weights, mode, torch.device(device)
        with tempfile.TemporaryDirectory() as folder:  # the wrapper loads <folder>/inception-2015-12-05.pt
            os.symlink(weights.path.resolve(), Path(folder) / WEIGHTS)
            try:
                self.net = InceptionV3W(folder, download=False, resize_inside=mode == "legacy_tensorflow")
            except (RuntimeError, ValueError, AttributeError) as e:
                raise Refused(f"{weights.path} is not clean-fid's TorchScript Inception ({WEIGHTS}): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None  # fmt: skip
        self.net = self.net.to(self.device).eval()
        self.resize = build_resizer(mode)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        x = np.stack([self.resize(img) for img in rgb]) if self.mode == "clean" else rgb
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2).to(self.device)
        with torch.no_grad():
            out = self.net(x)
        if tuple(out.shape) != (len(rgb), DIM):
            raise Refused(f"{self.weights.path}: the network gives features of shape {tuple(out.shape)}, not "
                          f"({len(rgb)}, {DIM}): not clean-fid's Inception")  # fmt: skip
        feats = out.double().cpu().numpy()
        if not np.isfinite(feats).all():
            raise Refused(f"{self.weights.path}: the network gives features that are not finite numbers")
        return feats


class Moments:
    """Running sums of features for their mean and (unbiased) covariance, in float64: no feature is kept."""

    def __init__(self, dim: int = DIM):
        self.n, self.sum, self.outer = 0, np.zeros(dim), np.zeros((dim, dim))

    def add(self, feats: np.ndarray) -> None:
        self.n += len(feats)
        self.sum += feats.sum(0)
        self.outer += feats.T @ feats

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise Refused(f"FID needs at least 2 images, got {self.n}")
        mu = self.sum / self.n
        return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the trace of the root taken as that of the symmetric
    S1^(1/2) S2 S1^(1/2), whose eigenvalues are real and non-negative (those within rounding of 0 taken as 0)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"statistics of different shapes: {mu1.shape}, {s1.shape} and {mu2.shape}, {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.where(w > _noise(w), w, 0.0))) @ v.T
    m = root1 @ s2 @ root1
    e = np.linalg.eigvalsh((m + m.T) / 2)
    trace_root = np.sqrt(np.where(e > _noise(e), e, 0.0)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * trace_root)


def _noise(eigenvalues: np.ndarray) -> float:
    """Below this an eigenvalue is rounding, not variance (fewer images than features leave many such): its
    square root, summed over thousands, would otherwise add up to a visible error."""
    return float(np.abs(eigenvalues).max(initial=0.0) * len(eigenvalues) * np.finfo(np.float64).eps)


def save_stats(path: Path, mu, sigma, n: int, key: str, digest: str = "") -> None:
    """(mu, sigma, n), the key they answer and the digest of the images' pixels, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, mu=mu, sigma=sigma, n=n, key=key, digest=digest)
    os.replace(f.name, path)


def load_stats(path: Path, key: str | None = None) -> tuple[np.ndarray, np.ndarray, int, str] | None:
    """Saved (mu, sigma, n, pixels' digest), or None when absent, unreadable or made for another key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                return None
            mu, sigma, n = z["mu"].astype(np.float64), z["sigma"].astype(np.float64), int(z["n"])
            digest = str(z["digest"]) if "digest" in z else ""
    except (OSError, KeyError, ValueError):
        return None
    if mu.ndim != 1 or sigma.shape != mu.shape * 2 or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        return None
    return mu, sigma, n, digest


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m training.fid A.npz B.npz", file=sys.stderr)
        return 2
    stats = [load_stats(Path(a)) for a in args]
    for a, s in zip(args, stats, strict=True):
        if s is None:
            print(f"training.fid: error: {a} holds no statistics (mu, sigma, n)", file=sys.stderr)
            return 2
    print(f"{frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1]):.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
