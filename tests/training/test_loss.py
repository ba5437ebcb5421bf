import numpy as np
import torch
import torch.nn.functional as F

from kernels import decode_bins
from training.loss import Criterion, recover_ab


def test_weighted_colour_loss_is_eq_19():
    torch.manual_seed(0)
    w = np.random.default_rng(0).uniform(0.5, 2, 313).astype(np.float32)
    crit = Criterion(w, "classify", lam_col=1.0, lam_cls=0.003)
    logits = torch.randn(2, 313, 4, 4)
    q = torch.randint(0, 313, (2, 4, 4))
    label = torch.tensor([5, -1])
    cls = torch.randn(2, 1000)
    out = crit((logits, cls), q, label)
    logp = F.log_softmax(logits, 1)
    manual = -(logp.gather(1, q[:, None])[:, 0] * torch.from_numpy(w)[q]).mean()
    assert torch.allclose(out["colour"], manual)
    assert torch.allclose(out["class"], F.cross_entropy(cls[:1], label[:1]))  # the unknown label adds nothing
    assert torch.allclose(out["loss"], manual + 0.003 * out["class"])


def test_unknown_labels_only_give_no_class_loss():
    crit = Criterion(np.ones(313, np.float32), "classify")
    out = crit(
        (torch.randn(2, 313, 2, 2), torch.randn(2, 1000)),
        torch.zeros(2, 2, 2, dtype=torch.long),
        torch.tensor([-1, -1]),
    )
    assert out["class"] == 0 and torch.allclose(out["loss"], out["colour"])


def test_soft_and_l1_heads_are_minimised_by_the_truth():
    q = torch.randint(0, 313, (1, 3, 3))
    soft = Criterion(np.ones(313, np.float32), "soft")
    good = soft.colour(torch.log(soft.soft[q].permute(0, 3, 1, 2) + 1e-9), q)
    assert good < soft.colour(torch.randn(1, 313, 3, 3), q)
    l1 = Criterion(np.ones(313, np.float32), "l1")
    ab = torch.from_numpy(decode_bins(q.numpy())).permute(0, 3, 1, 2) / 110
    assert l1.colour(ab, q) < 1e-6


def test_recovery_argmax_and_annealed():
    q = torch.tensor([[[120, 72]]])  # (0, 0) and (-30, 30), Fig. 3
    logits = F.one_hot(q, 313).permute(0, 3, 1, 2).float() * 20
    ab = recover_ab(logits, "classify", "argmax")
    assert ab[0, :, 0, 0].tolist() == [0, 0] and ab[0, :, 0, 1].tolist() == [-30, 30]
    assert torch.allclose(recover_ab(logits, "classify", "annealed"), ab, atol=1e-3)
    assert torch.equal(recover_ab(logits / 0.38, "classify", "argmax"), ab)  # argmax(Z / T) = argmax(Z)
