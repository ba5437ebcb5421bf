"""The adversarial training step of the GAN systems (`pix2pix`): L1 plus lambda times the conditional GAN
loss for the generator, the PatchGAN discriminator on real and generated (L, ab), after `--pretrain-steps`
steps of L1 alone (Isola, Zhu, Zhou and Efros 2017, *Image-to-Image Translation with Conditional Adversarial
Networks*, as the U-Net + PatchGAN colorization study uses it)."""

import torch
import torch.nn.functional as F

from kernels.gamut import CENTERS_F32
from training.loss import AB_SCALE

CELL = 10.0  # the side of a category's cell in (a, b)


def real_ab(q: torch.Tensor, size: tuple[int, int], seed: int, step: int) -> torch.Tensor:
    """The real (a, b) / AB_SCALE shown to D: each block's category center plus uniform noise within its cell
    (the store keeps categories; a grid of centers alone would give the real images away), upsampled
    bilinearly to `size`. The noise comes from (seed, step), so a resumed run draws the same."""
    g = torch.Generator(device=q.device).manual_seed(seed * 1_000_003 + step)
    centers = torch.from_numpy(CENTERS_F32.copy()).to(q.device)[q].permute(0, 3, 1, 2)  # (B, 2, h, w)
    noise = (torch.rand(centers.shape, generator=g, device=q.device) - 0.5) * CELL
    return F.interpolate((centers + noise) / AB_SCALE, size=size, mode="bilinear", align_corners=False)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def adversarial_step(run, batch: dict, autocast) -> dict:
    """One step of D (once adversarial), then one of G; `run.backward` keeps each loss and gradient norm for the
    check at the next log point (no step waits on the device)."""
    cfg = run.cfg
    L, q = batch["L"], batch["q"]
    zero = torch.zeros((), device=L.device)
    with autocast:
        fake, _ = run.net(L)  # (B, 2, H, W): (a, b) / AB_SCALE
        l1 = run.criterion.colour(fake, q)
    adversarial = run.step >= run.pretrain_steps
    loss_d, loss_gan = zero, zero
    if adversarial:
        real = real_ab(q, L.shape[-2:], cfg.seed, run.step).to(fake.dtype)
        with autocast:
            # one-sided label smoothing: D's target for real pairs only (Nazeri, Ng and Ebrahimi 2018)
            real_target = 1.0 - cfg.label_smoothing
            loss_d = 0.5 * (_bce(run.net_d(L, real), real_target) + _bce(run.net_d(L, fake.detach()), 0.0))
        run.opt_d.zero_grad(set_to_none=True)
        run.backward(loss_d, run.disc, "discriminator")
        run.opt_d.step()
        run.disc.requires_grad_(False)  # G's GAN loss flows through D without touching it
        with autocast:
            loss_gan = _bce(run.net_d(L, fake), 1.0)
        run.disc.requires_grad_(True)
    loss_g = loss_gan + cfg.lam_l1 * l1 if adversarial else l1
    run.opt.zero_grad(set_to_none=True)
    run.backward(loss_g, run.model, "generator")
    run.opt.step()
    return {"loss": loss_g, "colour": l1.detach(), "class": zero, "gan": loss_gan.detach(), "disc": loss_d.detach()}
