"""CUDA's autocast op lists on the CPU, so that CPU tests see the dtype mixes a GPU produces.

CPU autocast casts matmuls and convolutions to the low-precision dtype but leaves `pow`, `exp`, `sum`,
`softmax`, … in their input dtype; CUDA autocast runs those in float32 (torch's autocast docs, "CUDA Ops that
can autocast to float32"). Code that passes under CPU autocast can therefore die on a GPU with a dtype mismatch
(issue 15: ArcFace's `scatter` of a float32 margin term into a half `cosine`). `cuda_autocast(dtype)` enters
CPU autocast and, while autocast is enabled, also runs CUDA's float32 ops in float32 (a TorchFunctionMode);
`torch.autocast(..., enabled=False)` turns both off, as it does on a GPU.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# A subset of CUDA autocast's float32 list (torch.amp docs), as the Python functions that reach it.
_FLOAT32_OPS = {
    torch.pow,
    torch.Tensor.pow,
    torch.Tensor.__pow__,
    torch.Tensor.__rpow__,
    torch.acos,
    torch.Tensor.acos,
    torch.asin,
    torch.exp,
    torch.Tensor.exp,
    torch.log,
    torch.Tensor.log,
    torch.log1p,
    torch.sum,
    torch.Tensor.sum,
    torch.prod,
    torch.cumsum,
    torch.norm,
    torch.Tensor.norm,
    torch.reciprocal,
    torch.rsqrt,
    torch.cdist,
    F.softmax,
    torch.softmax,
    torch.Tensor.softmax,
    F.log_softmax,
    torch.log_softmax,
    torch.Tensor.log_softmax,
    F.cross_entropy,
    F.nll_loss,
    F.kl_div,
    F.normalize,
    F.softplus,
    F.layer_norm,
    F.group_norm,
    F.mse_loss,
    F.cosine_similarity,
}


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


class _CudaFloat32Ops(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FLOAT32_OPS and torch.is_autocast_enabled("cpu"):
            args, kwargs = _to_float32(args), {k: _to_float32(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype = torch.float16):
    """CPU autocast to `dtype` with CUDA's float32 op list on top."""
    with torch.autocast("cpu", dtype=dtype), _CudaFloat32Ops():
        yield
