"""Checks that a loss follows its paper: Wang et al.'s Eq. 18-20 for the AFF net, and the U-Net + PatchGAN study's
G and D objectives (L1 beside the GAN term, one-sided label smoothing), read from the gradients of a real step."""

import contextlib
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.training.paper_tables import AFF_CLASSES


def _close(a, b) -> bool:
    a, b = (float(torch.as_tensor(v).detach()) for v in (a, b))
    return abs(a - b) <= 1e-5 * (1 + abs(b))


def check_aff_loss(criterion_cls, lam_col: float = 1.0, lam_cls: float = 0.003) -> str:
    """Eq. 18-20: L = lam_col * L_col + lam_cls * L_cls, L_col the cross-entropy of the true colour category
    weighted by its balance weight w(Z) (Eq. 19), L_cls the picture category's cross-entropy (Eq. 18). Eq. 19 sums
    over h, w; a mean over the pixels is also accepted (returned: which one the loss uses)."""
    g = torch.Generator().manual_seed(0)
    weights = np.linspace(0.2, 3.0, 313)  # balance weights that differ between categories
    crit = criterion_cls(weights, "classify", lam_col=lam_col, lam_cls=lam_cls)
    z_hat, y_hat = torch.randn(2, 313, 4, 4, generator=g), torch.randn(2, AFF_CLASSES, generator=g)
    q, label = torch.randint(0, 313, (2, 4, 4), generator=g), torch.randint(0, AFF_CLASSES, (2,), generator=g)
    per_pixel = torch.as_tensor(weights, dtype=torch.float32)[q] * -F.log_softmax(z_hat, 1).gather(1, q[:, None])[:, 0]
    l_cls = -F.log_softmax(y_hat, 1).gather(1, label[:, None]).mean()
    colour_only = crit((z_hat, None), q, label)["loss"]
    total = crit((z_hat, y_hat), q, label)["loss"]
    norms = {"sum over h, w (Eq. 19)": per_pixel.sum((1, 2)).mean(), "mean over pixels": per_pixel.mean()}
    found = [k for k, v in norms.items() if _close(colour_only, lam_col * v)]
    assert found, f"colour loss {float(colour_only):.6g} is not lam_col x Eq. 19 ({[float(v) for v in norms.values()]})"
    cls_term, want = float(total - colour_only), float(lam_cls * l_cls)
    assert _close(cls_term, want), f"the class term is {cls_term:.6g}, Eq. 20 gives lam_cls x L_cls = {want:.6g}"
    return found[0]


class _StubG(nn.Module):  # G(x) = tanh(w (x - 0.5)) per channel: known (a, b), a weight for G's loss to reach
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.8, -0.6]).view(1, 2, 1, 1))
        self.outputs = []

    def forward(self, L):
        ab = torch.tanh(self.w * (L - 0.5))
        self.outputs.append(ab.detach().clone())
        return ab, None


class _StubD(nn.Module):  # logits that vary over the pixels and differ between real and generated (a, b)
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(1.5)), nn.Parameter(torch.tensor(-0.2))
        self.calls = []  # (ab, logits)

    def forward(self, L, ab):
        z = self.a * (4 * L - 2 + ab[:, :1] - ab[:, 1:]) + self.b
        self.calls.append((ab.detach().clone(), z))
        return z


def run_gan_step(step, smoothing: float, lam_l1: float, size: int = 8) -> SimpleNamespace:
    """One adversarial `step(run, batch, autocast)` (training.gan's) with stub G, D and L1 criterion; records each
    loss handed to run.backward with its gradient with respect to every D output."""
    g = torch.Generator().manual_seed(0)
    L, y = torch.rand(2, 1, size, size, generator=g), torch.rand(2, 2, size, size, generator=g) * 0.5 - 0.25
    q = torch.randint(0, 313, (2, size // 4, size // 4), generator=g)
    net, disc, losses = _StubG(), _StubD(), {}

    def backward(loss, module, name):
        live = [k for k, (_, z) in enumerate(disc.calls) if z.requires_grad]
        grads = torch.autograd.grad(loss, [disc.calls[k][1] for k in live], allow_unused=True, retain_graph=True)
        losses[name] = (loss.detach(), {k: gr for k, gr in zip(live, grads, strict=True) if gr is not None})

    noop = SimpleNamespace(zero_grad=lambda **kw: None, step=lambda: None)
    run = SimpleNamespace(
        cfg=SimpleNamespace(seed=0, label_smoothing=smoothing, lam_l1=lam_l1), net=net, model=net, net_d=disc,
        disc=disc, criterion=SimpleNamespace(colour=lambda fake, q: (fake - y).abs().mean()), opt=noop, opt_d=noop,
        step=10, pretrain_steps=0, backward=backward,
    )  # fmt: skip
    result = step(run, {"L": L, "q": q}, contextlib.nullcontext())
    fake = net.outputs[-1]
    kinds = ["generated" if torch.equal(ab, fake) else "real" for ab, _ in disc.calls]
    return SimpleNamespace(fake=fake, y=y, calls=disc.calls, kinds=kinds, losses=losses, result=result)


def bce_fit(rec: SimpleNamespace, name: str) -> dict[str, list[tuple[float, float]]]:
    """(target, weight) of each D output's BCE term in loss `name`: d loss / d z = (w / N) (sigmoid(z) - t) for
    w x mean BCE(z, t) over N logits, so the line through the (sigmoid(z), gradient) points gives t and w."""
    out: dict[str, list[tuple[float, float]]] = {}
    for k, grad in rec.losses[name][1].items():
        s, gr = torch.sigmoid(rec.calls[k][1].detach()).double().flatten(), grad.double().flatten()
        slope = ((s - s.mean()) * (gr - gr.mean())).sum() / (s - s.mean()).square().sum()
        fit = (gr - slope * (s - s.mean()) - gr.mean()).abs().max()
        assert fit < 1e-6 + 1e-3 * gr.abs().max(), f"the {name}'s loss is not a BCE on D's logits"
        if abs(slope) > 1e-12:
            out.setdefault(rec.kinds[k], []).append((float(s.mean() - gr.mean() / slope), float(slope * s.numel())))
    return out


def check_label_smoothing(step, smoothing: float = 0.1) -> None:
    """One-sided label smoothing (Salimans et al. 2016 Sec. 3.4; Nazeri et al. 2018, which training.gan cites; the
    seed papers do not use it): D's target for real pairs is 1 - s, for generated pairs 0, and G's target stays 1."""
    rec = run_gan_step(step, smoothing, lam_l1=1.0)
    wants = {("discriminator", "real"): 1 - smoothing, ("discriminator", "generated"): 0.0,
             ("generator", "generated"): 1.0}  # fmt: skip
    for (name, kind), want in wants.items():
        got = [t for t, _ in bce_fit(rec, name).get(kind, [])]
        assert got, f"the {name}'s loss has no BCE term on D's output for {kind} pairs"
        assert all(abs(t - want) < 1e-3 for t in got), (
            f"the {name}'s target for {kind} pairs is {got[0]:.4g}, one-sided smoothing gives {want:g}"
        )


def check_g_loss(step, lam_l1: float = 100.0) -> None:
    """The U-Net + PatchGAN study, Sec. III.C.c: G's loss = L_cGAN + lambda L1, the GAN term with weight 1;
    L_cGAN the BCE of D(x, G(x)) against "real" (BCEWithLogitsLoss, a mean), L1 = mean |y - G(x)|."""
    rec = run_gan_step(step, smoothing=0.1, lam_l1=lam_l1)
    assert "generator" in rec.losses, "the step hands G no loss"
    loss_g = float(rec.losses["generator"][0])
    z = rec.calls[max(k for k, kind in enumerate(rec.kinds) if kind == "generated")][1].detach()
    gan, l1 = float(F.softplus(-z).mean()), float((rec.fake - rec.y).abs().mean())  # BCE(z, 1) = -log sigmoid(z)
    w_gan = sum(w for _, w in bce_fit(rec, "generator").get("generated", []))
    w_l1 = (loss_g - w_gan * gan) / l1
    assert _close(w_gan, 1) and _close(w_l1, lam_l1), (
        f"G's loss is {w_gan:.4g} x L_cGAN + {w_l1:.4g} x L1, the study's L_cGAN + {lam_l1:g} x L1"
        + (": it has no GAN term" if abs(w_gan) < 1e-6 else "")
    )
    assert _close(loss_g, gan + lam_l1 * l1), f"G's loss is {loss_g:.6g}, L_cGAN + {lam_l1:g} L1 = {gan + lam_l1 * l1}"
    assert _close(rec.result["loss"], loss_g), "the step reports another G loss than it trains on"
