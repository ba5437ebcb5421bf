"""Checks that a built model or loss follows its paper (`paper_tables`): each raises AssertionError naming the
first mismatch.

The architecture checks watch what forward really runs: a TorchFunctionMode records every convolution with its
kernel, stride, padding, dilation, channels and output size, and the normalisations and activations that follow
it, whether modules or functional calls, so a layer that is built right but called otherwise is caught too.
"""

from fractions import Fraction
from types import SimpleNamespace

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from tests.training.paper_tables import (
    AFF_BLOCK_KERNELS,
    AFF_CLASSES,
    AFF_COLOUR,
    AFF_ENCODER,
    AFF_EQUATIONS,
    CUNET,
    PATCH_FIELD,
    PATCHGAN,
    ZHANG16,
    Row,
    Table,
    _scaled,
    in_channels,
)

_CONV_ARGS = {
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose2d": ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
}
_AFTER = {"batch_norm", "instance_norm", "layer_norm", "group_norm", "relu", "sigmoid", "tanh", "leaky_relu", "elu",
          "selu", "celu", "gelu", "silu", "mish", "softplus", "relu6", "hardtanh", "hardsigmoid", "hardswish",
          "prelu", "rrelu", "logsigmoid", "softmax", "log_softmax"}  # fmt: skip


def _pair(v):
    return v if isinstance(v, str) else (v, v) if isinstance(v, int) else tuple(v)


def _keep(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type == "meta" else t.detach().clone()


class _Trace(TorchFunctionMode):
    """Each convolution forward runs (kernel, stride, padding, dilation, channels, output size, input), with the
    normalisations and activations after it (`after`) and the output of the last of them (`value`)."""

    def __init__(self):
        super().__init__()
        self.layers: list[SimpleNamespace] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "").rstrip("_")
        if name in _CONV_ARGS:
            a = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1} | kwargs
            a |= dict(zip(_CONV_ARGS[name], args, strict=False))
            w, t = a["weight"], name == "conv_transpose2d"
            cin, cout = (w.shape[0], w.shape[1] * a["groups"]) if t else (w.shape[1] * a["groups"], w.shape[0])
            self.layers.append(SimpleNamespace(
                transposed=t, kernel=tuple(w.shape[-2:]), stride=_pair(a["stride"]), padding=_pair(a["padding"]),
                dilation=_pair(a["dilation"]), cin=cin, cout=cout, hw=tuple(out.shape[-2:]), x=_keep(a["input"]),
                value=_keep(out), after=[]))  # fmt: skip
        elif name in _AFTER and self.layers:
            if name == "leaky_relu":
                name = f"leaky_relu({(args[1] if len(args) > 1 else kwargs.get('negative_slope', 0.01)):g})"
            self.layers[-1].after.append(name)
            self.layers[-1].value = _keep(out)
        return out


def _rand(model: nn.Module, *shape: int) -> torch.Tensor:
    device = next(model.parameters()).device
    if device.type == "meta":
        return torch.empty(shape, device=device)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)


def trace(model: nn.Module, *inputs: torch.Tensor) -> list[SimpleNamespace]:
    """The convolutions forward runs (eval mode, no grad), in order, each with what follows it."""
    mode, was = _Trace(), model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            model(*inputs)
    finally:
        model.train(was)
    return mode.layers


def check_table(layers: list[SimpleNamespace], table: Table, width: float = 1.0, size: int | None = None,
                fields: tuple[str, ...] | None = None) -> None:  # fmt: skip
    """Each traced convolution against its row: the first differing field is named."""
    for row, layer, cin in zip(table.rows, layers, in_channels(table, width), strict=False):
        want = {"transposed": row.transposed, "kernel": _pair(row.kernel), "stride": _pair(row.stride),
                "dilation": _pair(row.dilation), "padding": _pair(row.padding), "in channels": cin,
                "out channels": _scaled(row, width), "after": row.after,
                "output size": (size // row.div,) * 2 if size and row.div else None}  # fmt: skip
        got = {"transposed": layer.transposed, "kernel": layer.kernel, "stride": layer.stride,
               "dilation": layer.dilation, "padding": layer.padding, "in channels": layer.cin,
               "out channels": layer.cout, "after": tuple(layer.after), "output size": layer.hw}  # fmt: skip
        for f in fields or want:
            if want[f] is not None:
                assert got[f] == want[f], f"{table.system} {row.name}: {f} is {got[f]}, {table.source} gives {want[f]}"
    assert len(layers) == len(table.rows), (
        f"{table.system} runs {len(layers)} convolutions, {table.source} lists {len(table.rows)}"
    )


def check_skips(layers: list[SimpleNamespace], table: Table) -> None:
    """Every row with a skip gets its source row's activated output concatenated (exactly) to its input."""
    index = {r.name: k for k, r in enumerate(table.rows)}
    for k, row in enumerate(table.rows):
        if row.skip:
            x, src = layers[k].x, layers[index[row.skip]].value
            c = src.shape[1]
            ok = x.shape[-2:] == src.shape[-2:] and any(
                torch.equal(x[:, i : i + c], src) for i in range(x.shape[1] - c + 1)
            )
            assert ok, f"{table.system} {row.name}'s input does not hold {row.skip}'s output ({table.source})"


def check_activations(model: nn.Module, table: Table, *inputs: torch.Tensor) -> None:
    """Only what follows each convolution (normalisation and activation, as forward runs them)."""
    check_table(trace(model, *inputs), table, fields=("after",))


def check_cunet(model: nn.Module, width: float = 1.0, size: int = 64) -> None:
    layers = trace(model, _rand(model, 1, 1, size, size))
    check_table(layers, CUNET, width, size)
    if layers[0].x.device.type != "meta":
        check_skips(layers, CUNET)


def check_zhang16(model: nn.Module, width: float = 1.0, size: int = 64) -> None:
    check_table(trace(model, _rand(model, 1, 1, size, size)), ZHANG16, width, size)


def receptive_field(layers: list[SimpleNamespace]) -> int:
    rf, jump = 1, 1
    for layer in layers:
        rf += (layer.kernel[0] - 1) * layer.dilation[0] * jump
        jump *= layer.stride[0]
    return rf


def check_pix2pix_d(disc: nn.Module, width: float = 1.0, size: int = 64) -> None:
    layers = trace(disc, _rand(disc, 1, 1, size, size), _rand(disc, 1, 2, size, size))
    check_table(layers, PATCHGAN, width)
    assert receptive_field(layers) == PATCH_FIELD, f"PatchGAN D sees {receptive_field(layers)} px, not 70 x 70"


def check_pix2pix_g(model: nn.Module, size: int = 64) -> None:
    """The U-Net + PatchGAN study, Sec. III.B: G maps L (1 channel) to (a, b) at L's size through a final
    sigmoid; its encoder's activations are ReLU."""
    layers = trace(model, _rand(model, 1, 1, size, size))
    first, last = layers[0], layers[-1]
    assert first.cin == 1, f"G's first convolution takes {first.cin} channels, not L alone"
    assert (last.cout, last.hw) == (2, (size, size)), f"G's output is {last.cout} x {last.hw}, not (a, b) at L's size"
    assert tuple(last.after) == ("sigmoid",), f"G's output activation is {last.after}, the study's is a sigmoid"
    acts = {a for layer in layers[:-1] for a in layer.after if a != "batch_norm"}
    assert acts <= {"relu"}, f"G's hidden activations are {sorted(acts)}, the study's encoder uses ReLU"


def _resize_factor(op: str) -> Fraction:
    """size(En_j) / size(AFF_k) for Eq. 12-14's Subs_n / Ups_n / nothing."""
    return Fraction(int(op[4:])) if op.startswith("Subs") else Fraction(1, int(op[3:])) if op else Fraction(1)


def _aff_forward(model: nn.Module, x: torch.Tensor, perturb_en: int = 0, perturb_aff: int = 0):
    """AFF outputs, encoder shapes (C, H, W) and model outputs (eval mode). `perturb_en` = j adds noise to En_j as
    every consumer but the next encoder block sees it (only En_j's direct uses change); `perturb_aff` = k: AFF_k's."""
    affs, sizes, saved, hooks = {}, {}, {}, []
    g = torch.Generator().manual_seed(1)

    def noisy(o):
        return o + torch.randn(o.shape, generator=g).to(o.device) * (o.abs().mean() + 1)

    for j, block in enumerate(model.encoder, 1):
        hooks.append(block.register_forward_hook(lambda m, i, o, j=j: sizes.__setitem__(j, tuple(o.shape[1:]))))
    for k, module in enumerate(getattr(model, "aff", ()), 1):
        hooks.append(module.register_forward_hook(lambda m, i, o, k=k: affs.__setitem__(k, o.detach().clone())))
    if perturb_en:

        def swap(m, i, o):
            saved["o"] = o
            return noisy(o)

        hooks.append(model.encoder[perturb_en - 1].register_forward_hook(swap))
        hooks.append(model.encoder[perturb_en].register_forward_pre_hook(lambda m, a: (saved["o"], *a[1:])))
    if perturb_aff:
        hooks.append(model.aff[perturb_aff - 1].register_forward_hook(lambda m, i, o: noisy(o)))
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return affs, sizes, out


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-5 * (1 + b.abs().max()))


def check_aff_inputs(model: nn.Module, size: int = 32) -> None:
    """Eq. 12-14: each AFF module's output depends directly on all five encoder scales, each at the resize its
    equation gives, and reaches the colour logits (Sec. 3.1: the decoder concatenates it)."""
    assert len(getattr(model, "aff", ())) == 3, "Wang et al. Eq. 12-14: three AFF modules; this model has none"
    assert len(getattr(model, "encoder", ())) == 6, "Wang et al. Sec. 3.1: six encoder blocks (En1..En5, x^g)"
    x = _rand(model, 1, 1, size, size)
    base, sizes, (colour, _) = _aff_forward(model, x)
    for k, eq in AFF_EQUATIONS.items():
        for j, op in enumerate(eq, 1):
            want = base[k].shape[-1] * _resize_factor(op)
            assert sizes[j][-1] == want, f"AFF{k} is at {base[k].shape[-1]} px, Eq. {11 + k} puts En{j} at {want}"
    for j in range(1, 6):
        affs, _, _ = _aff_forward(model, x, perturb_en=j)
        for k, eq in AFF_EQUATIONS.items():
            assert _differs(affs[k], base[k]), (
                f"AFF{k}'s output does not depend on En{j}; Eq. {11 + k} feeds it {eq[j - 1] or 'itself'}(En{j})"
            )
    for k in AFF_EQUATIONS:
        assert _differs(_aff_forward(model, x, perturb_aff=k)[2][0], colour), f"AFF{k} does not reach the decoder"


def check_aff_encoder(model: nn.Module, width: float = 1.0, size: int = 64) -> None:
    """Sec. 3.1, 3.3, 3.6: En1..En6's channels and sizes, Fig. 4's 1x1 + two 3x3 per block, Z-hat 313 x h/4,
    Y-hat 1000."""
    _, shapes, (colour, cls) = _aff_forward(model, _rand(model, 1, 1, size, size))
    for j, (chs, div) in enumerate(AFF_ENCODER, 1):
        want = (_scaled(Row("", 1, 1, 0, chs, ()), width), size // div, size // div)
        assert shapes[j] == want, f"En{j} is {shapes[j]}, Wang et al. Sec. 3.1 gives {want}"
        kernels = sorted(m.kernel_size[0] for m in model.encoder[j - 1].modules() if isinstance(m, nn.Conv2d))
        assert tuple(kernels) == AFF_BLOCK_KERNELS, f"En{j}'s convs are {kernels}, Fig. 4 has 1x1 + two 3x3"
    want = (AFF_COLOUR[0], size // AFF_COLOUR[1], size // AFF_COLOUR[1])
    assert tuple(colour.shape[1:]) == want, f"Z-hat is {tuple(colour.shape[1:])}, Sec. 3.1 gives {want}"
    assert cls is None or cls.shape[1] == AFF_CLASSES, f"Y-hat has {cls.shape[1]} classes, Sec. 3.6 gives 1000"


def check_cheng15(model: nn.Module, size: int = 32) -> None:
    """Cheng et al. 2015 as Beniwal et al. review it: fully connected per pixel (1 x 1), every hidden layer half
    as wide as the input layer, ReLU after each, two linear outputs."""
    layers = [x for x in trace(model, _rand(model, 1, 1, size, size)) if x.kernel == (1, 1)]
    assert len(layers) >= 2, f"cheng15 runs {len(layers)} per-pixel layers: an input and an output at least"
    n_in = layers[0].cin
    for k, layer in enumerate(layers[:-1]):
        assert abs(layer.cout - n_in / 2) <= 0.5, f"cheng15 hidden layer {k}: {layer.cout} neurons, not {n_in} / 2"
        assert layer.after == ["relu"], f"cheng15 hidden layer {k}: followed by {layer.after}, the review: ReLU"
    assert layers[-1].cout == 2 and layers[-1].after == [], f"cheng15's output: {layers[-1].cout} {layers[-1].after}"
