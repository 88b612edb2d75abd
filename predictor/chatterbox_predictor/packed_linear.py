"""T3's linear layers with their weights laid out once for oneDNN's kernels (CPU only).

A decode step multiplies a few rows (one per stream) by every weight of the transformer. PyTorch's CPU
linear goes to MKL: for one row a matrix-vector product, fast; for two to eight rows a general matrix
product, which on these shapes is slow. In float32 a step of two streams cost 1.77x a step of one, and
of four 2.74x (full-size Turbo, bench/results/steps.json), so batching barely paid. oneDNN reads weights
that were put once in its own blocked layout: there a step of two costs 1.12x, of four 1.17x, and a
single step is faster too (71 ms against 77).

The packed layout replaces the dense weight (no second copy in memory). The results differ from MKL's
in the last bits (another order of summation), so tokens drawn with packed weights can part from the
library's where two candidates are within that rounding; tests measure the agreement.

`torch.ops.mkldnn._reorder_linear_weight` and `_linear_pointwise` are the ops PyTorch's own compiler
(Inductor) uses for frozen CPU linears in bfloat16 (for float32 it takes MKL's packed product, which in
a first, noisy measurement here was no faster than the plain one for 2 to 8 rows). They are internal, so
`pack_linears` checks that they exist (and, for bfloat16, that the CPU has it) and leaves the model as it
is when they do not. S3Gen's flow uses the same layer to compute in bfloat16 (s3gen_precision).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# oneDNN chooses a layout for the number of rows it expects; 1 and 4 measured the same here, and a decode
# step has a few rows.
_ROWS_HINT = 4


class PackedLinear(torch.nn.Module):
    """`y = x W^T + b` with W held in oneDNN's layout.

    Gradients: the fused op has no backward of its own (autograd would silently give wrong results), so
    a forward that needs one (the cloner's tuning, which differentiates through T3 for the speaker
    embedding) computes with the dense weight, unpacked for that call.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype | None = None,
                 rows: int | None = _ROWS_HINT):
        """`dtype`: what the product computes in (default: the weight's); inputs of another dtype are cast
        to it and the result back (S3Gen's flow: float32 activations, bfloat16 products). `rows`: the
        number of input rows oneDNN lays the weight out for (None: its own choice)."""
        super().__init__()
        dtype = dtype or weight.dtype
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype).contiguous(), rows)
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return torch.nn.functional.linear(x, self.packed.to_dense().to(x.dtype), bias)
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features).to(self.packed.dtype),
                                               self.packed, self.bias, "none", [], "")
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, layout=onednn"


def _dense(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight as (out, in), bias) of a linear layer, or None for any other module."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return module.weight, module.bias
    if isinstance(module, Conv1D):  # GPT-2's linear: weight (in, out)
        return module.weight.t(), module.bias
    return None


def supported(dtype: torch.dtype) -> bool:
    """Whether this PyTorch and CPU run the packed linear in `dtype` (bfloat16 needs the CPU's support:
    oneDNN would otherwise emulate it)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def pack_linears(t3) -> int:
    """Replaces the linear layers of T3's transformer with `PackedLinear` (in place); returns how many.
    The rest stays as it is: the speech head is 2% of a step's weights, and the library reads its
    `weight` (T3.device); the conditioning encoder and the text head run once per request. A model
    whose device, dtype or PyTorch build the packed op does not serve is left alone (0)."""
    dtype = next(t3.parameters()).dtype
    if t3.device.type != "cpu" or not supported(dtype):
        log.info("linear layers not packed: %s %s is not served by oneDNN's packed linear here",
                 t3.device.type, dtype)
        return 0
    replaced = 0
    for parent in list(t3.tfmr.modules()):
        for name, child in list(parent.named_children()):
            dense = _dense(child)
            if dense is not None:
                setattr(parent, name, PackedLinear(*dense))
                replaced += 1
    return replaced
