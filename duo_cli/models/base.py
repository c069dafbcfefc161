"""Model interface shared by agents and coordinators."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """What every duo model returns: action logits, state value, hidden features."""

    logits: torch.Tensor
    value: torch.Tensor
    hidden: torch.Tensor


class Model(nn.Module):
    """Base class: subclasses set ``hidden_dim`` and ``logit_dim`` and implement ``forward``.

    ``inputs_repeat``: the same input rows come back often (MiniGrid's views), so the
    model runs once per distinct row and a frozen copy is worth memoising
    (:mod:`duo_cli.models.rows`); its rows' outputs depend on their own input only.
    """

    hidden_dim: int
    logit_dim: int
    inputs_repeat: bool = False

    def forward(self, obs) -> ModelOutput:  # pragma: no cover - interface
        raise NotImplementedError


def init_layer(layer: nn.Module, std: float = 2**0.5, bias: float = 0.0) -> nn.Module:
    """Orthogonal weight init, constant bias (the usual PPO initialisation)."""
    nn.init.orthogonal_(layer.weight, std)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, bias)
    return layer


@functools.cache
def _bf16_autocast_available(device_type: str) -> bool:
    """Whether ``torch.autocast(device_type, dtype=torch.bfloat16)`` runs in bf16 on this machine.

    Mirrors the checks of :class:`torch.autocast`, so that the frames are cast to bf16
    only where autocast will cast the weights to bf16 too (else the first layer sees a
    bf16 input and fp32 weights and fails): the device type must have autocast at all
    (``meta`` has none); CUDA (and XPU, MTIA) must report bf16 support; a custom
    (privateuse1) backend must list bf16 among its AMP dtypes.
    """
    if not torch.amp.autocast_mode.is_autocast_available(device_type):
        return False
    module = getattr(torch, device_type, None)
    if device_type == torch._C._get_privateuse1_backend_name():
        supported = getattr(module, "get_amp_supported_dtype", None)
        return supported is not None and torch.bfloat16 in supported()
    is_bf16_supported = getattr(module, "is_bf16_supported", None)
    return True if is_bf16_supported is None else bool(is_bf16_supported())


@functools.cache
def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX-BF16), not torch's emulation.

    Forward+backward of duo's nets, one thread, fp32 time over bf16 time
    (``bench/precision.py``: lower instruction sets emulated on an AMD EPYC with
    AVX512-BF16): 1.6-2.1 with AVX512-BF16; 0.4-0.9 with AVX512 alone; 0.06-0.13 with
    AVX2, i.e. emulated bf16 is up to 16x slower than fp32.
    """
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def _device_type(device: torch.device | str) -> str:
    """``"cpu"``, ``"cuda"``, ... of ``device`` (no new ``torch.device`` in a forward's path)."""
    return device.type if isinstance(device, torch.device) else torch.device(device).type


def trunk_dtype(device: torch.device | str, bf16: bool) -> torch.dtype:
    """The dtype a model's trunk computes in on ``device``: the one place this is decided.

    ``torch.bfloat16`` (input cast to bf16, trunk run under ``torch.autocast`` of the
    device's type) when the model asks for ``bf16``, torch can autocast to bf16 on that
    device type and, on a CPU, the CPU computes bf16 itself (:func:`cpu_computes_bf16`:
    where torch emulates it, bf16 is 1.1-16x slower than fp32); ``torch.float32`` (no
    autocast) otherwise. A device without autocast (``meta``) or without bf16, or such a
    CPU, runs the model in fp32, silently, with the same outputs' shapes.
    """
    if not bf16:
        return torch.float32
    device_type = _device_type(device)
    if device_type == "cpu" and not cpu_computes_bf16():
        return torch.float32
    return torch.bfloat16 if _bf16_autocast_available(device_type) else torch.float32


@contextlib.contextmanager
def trunk_precision(device: torch.device | str, bf16: bool) -> Iterator[torch.dtype]:
    """Run a block in the precision :func:`trunk_dtype` picks; yields that dtype.

    Cast the input to the yielded dtype inside the block (e.g. ``frames_to_float(obs,
    dtype)``) and the block's output back with ``.float()`` (a no-op in fp32)::

        with trunk_precision(obs.device, self.bf16) as dtype:
            hidden = self.trunk(frames_to_float(obs, dtype))
        hidden = hidden.float()
    """
    dtype = trunk_dtype(device, bf16)
    if dtype == torch.float32:
        yield dtype
        return
    device_type = _device_type(device)
    with torch.autocast(device_type, dtype=dtype):
        yield dtype


@contextlib.contextmanager
def weights_fixed(device: torch.device | str) -> Iterator[None]:
    """A block in which the weights stay fixed (a rollout): a trunk run under bf16
    autocast (:func:`trunk_precision`) casts its weights to bf16 once in the block, not
    once per forward.

    autocast keeps its casts of the weights until the outermost autocast block ends; this
    is such a block, with autocast off (so nothing else in it changes precision). On the
    coordinator's obs encoder the casts were a tenth of a 64-row forward, and each one
    streamed the fp32 weights (1 MB) through the cache the env was using.
    """
    device_type = _device_type(device)
    if not torch.amp.autocast_mode.is_autocast_available(device_type):
        yield
        return
    with torch.autocast(device_type, enabled=False):
        yield


def frames_to_float(obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NHWC frames -> ``dtype`` NCHW view in channels_last memory, scaled to [0, 1].

    The permute is left non-contiguous on purpose: torch keeps the channels_last
    layout, which is much faster for convolutions on CPU. With ``dtype=torch.bfloat16``
    the frames go straight from uint8 to bf16 (exact for 0..255) and are divided in
    bf16, which rounds exactly as autocast rounding the fp32 quotient would, without
    the fp32 copy (about 1.3x faster fwd+bwd for the small CNN). Pass bf16 only inside
    :func:`trunk_precision` (which yields the dtype to pass): a bf16 input without bf16
    autocast meets fp32 weights and fails.
    """
    return obs.permute(0, 3, 1, 2).to(dtype).div_(255.0)
