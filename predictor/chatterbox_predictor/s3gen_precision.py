"""S3Gen in reduced precision: the flow's linear layers and the vocoder's convolutions compute in bfloat16
(or float16 on CUDA) on float32 activations, which stay float32 between them.

Where S3Gen's time goes on the CPU (full-size Turbo, two cores with AMX, 2026-12-06): a flow pass is
about 58% linear layers, whose products have hundreds of rows (frames) and are bound by arithmetic; a
vocoder call is about 75% convolutions. Measured on the random full-size checkpoint against float32:

- flow: a pass took 0.68-0.81 of float32's time; its mel frames sat 49-52 dB from float32's (Turbo and
  English). Streaming's own windows put them 17.4-19.7 dB from a one-shot decode (test_engine), so this is
  far below what streaming already changes;
- vocoder: a call took 0.51-0.60 of float32's (24 to 192 frames, weight norms folded in both); its
  waveform sat 42.1 dB from float32's at every length.

What stays float32, and why:

- the vocoder's f0 predictor: the excitation's phase is the running sum of its f0, so an error there
  would grow along a chunk (and it is a few small convolutions at the frame rate);
- the sine source, the inverse STFT and every normalisation, attention and activation: they are not
  where the time goes, and the inverse STFT refuses bfloat16.

Separately, and in any precision: the vocoder's convolutions carry weight normalisation as a
parametrisation that recomputes every weight on every call (4-24% of a call). It is a training device;
`fold_weight_norm` computes the weights once. Same weights, so the same audio bit for bit.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from .packed_linear import PackedLinear, supported

log = logging.getLogger(__name__)


class CastLinear(torch.nn.Module):
    """`y = x W^T + b` computed in the weight's dtype for inputs and results in their own: the
    reduced-precision linear where oneDNN's packed one does not serve (CUDA)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.detach().to(dtype).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, dtype={self.weight.dtype}"


class CastConv(torch.nn.Module):
    """A `Conv1d` or `ConvTranspose1d` computed in `dtype` for inputs and results in their own."""

    def __init__(self, conv: torch.nn.Conv1d | torch.nn.ConvTranspose1d, dtype: torch.dtype):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"{conv}: only zero padding is reproduced")
        self.transposed = isinstance(conv, torch.nn.ConvTranspose1d)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, \
            conv.groups
        self.output_padding = conv.output_padding if self.transposed else None
        self.register_buffer("weight", conv.weight.detach().to(dtype).clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().to(dtype).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.to(self.weight.dtype)
        if self.transposed:
            y = F.conv_transpose1d(low, self.weight, self.bias, self.stride, self.padding,
                                   self.output_padding, self.groups, self.dilation)
        else:
            y = F.conv1d(low, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return f"{kind}weight={tuple(self.weight.shape)}, stride={self.stride}, dtype={self.weight.dtype}"


def native(dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether `device` computes in `dtype` natively: a CUDA device that supports it, or for bfloat16 a
    CPU with AVX512-BF16 (where oneDNN would otherwise emulate it, at no gain)."""
    device = torch.device(device)
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    check = getattr(torch._C._cpu, "_is_avx512_bf16_supported", None)  # private; absent: assume not
    return dtype == torch.bfloat16 and check is not None and bool(check()) and supported(dtype)


def fold_weight_norm(module: torch.nn.Module) -> int:
    """Replaces every weight parametrisation under `module` by the weight it computes (in place); returns
    how many."""
    folded = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            folded += 1
    return folded


def _replace(module: torch.nn.Module, kinds: tuple[type, ...], make, skip: frozenset | set = frozenset()) \
        -> int:
    """Replaces every submodule of `kinds` under `module` (but under `skip`) by `make(it)`; returns how
    many."""
    replaced = 0
    for parent in list(module.modules()):
        if parent in skip:
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                setattr(parent, name, make(child))
                replaced += 1
    return replaced


def reduce_s3gen(s3gen, dtype: torch.dtype) -> tuple[int, int]:
    """Makes S3Gen's flow linear layers and its vocoder's convolutions (but its f0 predictor's) compute in
    `dtype`, in place; returns how many of each it replaced. float32: nothing changes."""
    if dtype == torch.float32:
        return 0, 0

    def linear(layer: torch.nn.Linear) -> torch.nn.Module:
        if layer.weight.device.type == "cpu" and supported(dtype):
            # Hundreds of rows (frames) a product: oneDNN picks the layout for them.
            return PackedLinear(layer.weight, layer.bias, dtype, rows=None)
        return CastLinear(layer.weight, layer.bias, dtype)

    vocoder = s3gen.mel2wav
    return (_replace(s3gen.flow, (torch.nn.Linear,), linear),
            _replace(vocoder, (torch.nn.Conv1d, torch.nn.ConvTranspose1d), lambda conv: CastConv(conv, dtype),
                     skip=set(vocoder.f0_predictor.modules())))
