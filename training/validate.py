"""Validation during training: the loss and the PSNR of a fixed set of held-out images, every --eval-every
steps, with a grid of a few of them for TensorBoard. The ground truth is decoded once, when the run starts."""

import numpy as np
import torch

from training.data import device_batch


class Validator:
    """`--val-images` images of --eval-store, or of the store's held-out part (none: `ready` is False)."""

    def __init__(self, run):
        from training.evaluate import ground_truth

        cfg = run.cfg
        reader = run.stores.eval or run.stores.train  # the readers the run opened: no store is opened again
        idx = np.arange(reader.n) if run.stores.eval is not None else run.data.eval_idx
        truth = ground_truth(reader.group, idx[: cfg.val_images], reader.path) if cfg.val_images else []
        keep = [k for k, t in enumerate(truth) if t is not None]
        self.ready = bool(keep)
        if self.ready:
            arrays = reader.read(idx[keep])
            self.host = {"L": torch.from_numpy(arrays["L"]), "q": torch.from_numpy(arrays["bins"])}
            self.host |= {"label": torch.from_numpy(arrays["label"]), "flip": torch.zeros(len(keep), dtype=torch.bool)}
            self.truth = torch.from_numpy(np.stack([truth[k] for k in keep]))

    @torch.no_grad()
    def __call__(self, run, batch: int = 16) -> tuple[dict, torch.Tensor]:
        """({"loss", "psnr"}, a uint8 grid (N, H, W, 3) of gray | prediction | truth rows for 4 images)."""
        from training import metrics
        from training.evaluate import predict_ab

        cfg, losses, psnr, rows = run.cfg, [], [], []
        run.model.eval()
        for s in range(0, len(self.truth), batch):
            part = {k: v[s : s + batch] for k, v in self.host.items()}
            moved = device_batch(part, run.device, run.size, run.channels_last, run.crop)
            with run.autocast():
                losses.append(run.criterion(run.model(moved["L"]), moved["q"], moved["label"])["loss"].float())
            ab = predict_ab(run.model, part["L"], cfg.size, cfg.head, cfg.recovery)
            L = part["L"].to(ab.device).double() * (100.0 / 255.0)
            rgb = metrics.lab_to_rgb8(L, ab)
            psnr.append(metrics.psnr(self.truth[s : s + batch].to(rgb.device), rgb))
            if not rows:
                gray = metrics.lab_to_rgb8(L, torch.zeros_like(ab))
                rows = [
                    torch.cat([gray[k], rgb[k], self.truth[s + k].to(rgb.device)], dim=1)
                    for k in range(min(4, len(rgb)))
                ]
        run.model.train()
        metrics = {"loss": float(torch.stack(losses).mean()), "psnr": float(torch.cat(psnr).mean())}
        return metrics, torch.stack(rows).cpu()
