"""``make test-avx2``: this CPU seen as one without bf16 arithmetic, in every Python process.

With ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``ATEN_CPU_CAPABILITY=avx2`` (set by the make target)
torch's kernels are held to AVX2; this module, first on ``PYTHONPATH``, makes
``torch.cpu.get_capabilities()`` report no AVX512-BF16 or AMX-BF16, so duo picks fp32
(:func:`duo_cli.models.base.cpu_computes_bf16`) as it would on such a CPU. The test suite
then runs as on an AVX2 machine: fp32 results differ in their last bits, and every pinned
number must hold there too.
"""

import types

import torch.cpu

_capabilities = torch.cpu.get_capabilities


def _without_bf16() -> types.MappingProxyType:
    caps = dict(_capabilities())
    caps.update(avx512_bf16=False, amx_bf16=False)
    return types.MappingProxyType(caps)


torch.cpu.get_capabilities = _without_bf16
