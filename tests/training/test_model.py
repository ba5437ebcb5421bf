import pytest
import torch

from training.models import count_parameters
from training.models.aff import HEADS, VARIANTS, ColorNet, ModelConfig


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("head", HEADS)
def test_every_variant_forward_backward_finite(variant, head):
    torch.manual_seed(0)
    model = ColorNet(ModelConfig(variant, head, width=1 / 16, n_classes=10))
    L = torch.rand(2, 1, 64, 64)
    col, cls = model(L)
    assert col.shape == (2, 2 if head == "l1" else 313, 16, 16)
    assert (cls is not None) == (variant in ("unet+cls", "full"))
    if cls is not None:
        assert cls.shape == (2, 10)
    loss = col.float().square().mean() + (cls.square().mean() if cls is not None else 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_paper_size_matches_the_text():
    """Sec. 3.1: En1 to En6 carry 64 to 2048 channels, En6 at h/32 (the paper gives no parameter count: the
    encoder's is derived from its table in tests/training/test_paper_tables.py)."""
    assert ModelConfig().channels() == [64, 128, 256, 512, 1024, 2048]
    feats = []
    x = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        for block in ColorNet(ModelConfig(width=1 / 32)).encoder:
            x = block(x)
            feats.append(x.shape[-1])
    assert feats == [64, 32, 16, 8, 4, 2]  # En1 at h, ..., x^g at h/32


def test_aff_and_cls_change_the_model():
    n = {v: count_parameters(ColorNet(ModelConfig(v, width=1 / 8))) for v in VARIANTS}
    assert n["unet"] < n["unet+cls"] < n["full"] and n["unet"] < n["unet+aff"] < n["full"]


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="variant"):
        ModelConfig("resnet")
    with pytest.raises(ValueError, match="head"):
        ModelConfig(head="gan")
