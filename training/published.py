"""Figures other systems' papers publish on the ImageNet protocols: printed beside ours, marked as published and
not reproduced here. How each was checked: docs/evaluation.md."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    system: str
    protocol: str
    fid: float
    cf: float
    delta_cf: float
    psnr: float
    source: str


KANG = "Kang et al. 2023, DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders, Table 1"
DU = "Du et al. 2024, MultiColor: Image Colorization by Learning from Multiple Color Spaces, Table 2"
FIGURES = (
    Published("CIC (Zhang et al. 2016)", "val5k", 8.72, 31.60, 6.61, 22.64, KANG),
    Published("DDColor-L", "val5k", 3.92, 38.26, 0.05, 23.85, KANG),
    Published("MultiColor", "val5k", 2.17, 38.24, 0.03, 24.69, DU),
    Published("MultiColor", "val50k", 0.42, 38.89, 0.20, 24.58, DU),
)
CAVEAT = (
    "Published, not reproduced here. Their FID is their own script's, on torchvision's ImageNet classifier "
    "Inception rather than the TensorFlow FID Inception used here: same protocol, another feature network, so "
    "read FID across the two as a rough guide. Their CF is the absolute-opponent CF computed here; their ΔCF is "
    "the difference of the mean CFs (every row's CF and ΔCF give the same ground-truth CF)."
)


def rows(protocol: str) -> list[Published]:
    return [p for p in FIGURES if p.protocol == protocol]


def table(protocol: str, ours: list[tuple[str, dict]]) -> list[str]:
    """Markdown: our rows (name, figures) beside the published ones of `protocol`, each cited."""
    head = ["| system | FID | CF | ΔCF (means) | ΔCF (per image) | PSNR | source |", "|---|---|---|---|---|---|---|"]

    def f(value, digits=2):
        return "" if value is None else f"{value:.{digits}f}"

    def fid(m):
        if m.get("fid_unverified") is not None:
            return f"{m['fid_unverified']:.2f} (unverified weights: not an FID)"
        return f(m.get("fid"))

    lines = [f"| {name} | {fid(m)} | {f(m.get('cf'))} | {f(m.get('delta_cf'))} | {f(m.get('delta_cf_images'))} "
             f"| {f(m.get('psnr'))} | measured here |" for name, m in ours]  # fmt: skip
    published = [f"| {p.system} | {p.fid:.2f} | {p.cf:.2f} | {p.delta_cf:.2f} | | {p.psnr:.2f} | published: "
                 f"{p.source} |" for p in rows(protocol)]  # fmt: skip
    return [*head, *lines, *published]
