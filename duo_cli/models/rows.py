"""Forwards that run once per distinct input row.

MiniGrid's 7x7 views recur: 7% of the rows of a LavaGap rollout are distinct, 30% on
DoorKey, 0.5% on DistShift (one layout). A model whose inputs recur declares
``Model.inputs_repeat``; it then runs on the distinct rows of a batch only
(:func:`unique_rows`), and a model whose weights stay fixed for a while (a frozen agent;
the coordinator during one rollout) is memoised across batches (:class:`ForwardMemo`).
Both compute the same function: a row's outputs do not depend on the other rows of its
batch, so only the last bits of a fixed seed's numbers change (the kernels' blocking,
and autograd summing a distinct row's gradients in another order). Rows are compared
byte for byte. On an accelerator neither applies: the forwards they save are cheap
there, and the sort or lookup would sync with the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from duo_cli.models.base import ModelOutput


def _host_tensors(obs: Any) -> list[torch.Tensor] | None:
    """The tensors of a batch (a tensor, a sequence or a mapping of them), ``None`` unless
    all are on the CPU, without grad, with at least two rows."""
    if isinstance(obs, torch.Tensor):
        tensors = [obs]
    else:
        tensors = list(obs.values()) if isinstance(obs, Mapping) else list(obs)
    if len(tensors[0]) < 2 or any(t.device.type != "cpu" or t.requires_grad for t in tensors):
        return None
    return tensors


def _row_keys(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """One ``np.void`` key per row: the row's bytes in every tensor, concatenated."""
    n = len(tensors[0])
    parts = [np.ascontiguousarray(t.numpy()).reshape(n, -1).view(np.uint8) for t in tensors]
    rows = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
    return rows.view(np.dtype((np.void, rows.shape[1]))).reshape(n)


def unique_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The distinct rows of a CPU batch: ``(first, inverse)`` with ``t[first][inverse]``
    equal to ``t`` for each of ``tensors`` (rows differ when their bytes in any of them
    differ); ``None`` when every row is distinct or the batch is not on the CPU.

    A model runs on ``first`` and indexes its outputs with ``inverse``; autograd's
    backward of the indexing sums each distinct row's gradients.
    """
    host = _host_tensors(tensors)
    if host is None:
        return None
    _, first, inverse = np.unique(_row_keys(host), return_index=True, return_inverse=True)
    if len(first) == len(host[0]):
        return None
    return torch.from_numpy(first), torch.from_numpy(inverse.reshape(-1))


def select_rows(obs: Any, rows: torch.Tensor) -> Any:
    """``obs`` (a tensor or a mapping of tensors) at ``rows``."""
    if isinstance(obs, Mapping):
        return {key: value.index_select(0, rows) for key, value in obs.items()}
    return obs.index_select(0, rows)


def memoised(forward: Callable[[Any], ModelOutput], model: Any) -> Callable[[Any], ModelOutput]:
    """``forward`` as a :class:`ForwardMemo` where ``model`` declares ``inputs_repeat``,
    else ``forward`` itself. Only for weights that stay fixed while it is used."""
    return ForwardMemo(forward) if getattr(model, "inputs_repeat", False) else forward


class ForwardMemo:
    """``forward`` memoised per input row, for as long as the weights behind it stay fixed.

    Each call runs ``forward`` once, on the rows (distinct among themselves) it has not
    met, and gathers every row's outputs from the rows met so far. ``capacity`` bounds
    how many it keeps: when a call would pass it, it forgets them all and starts again (a
    batch with more distinct rows than that goes straight to ``forward``).
    Make a new memo (or :meth:`clear` it) when the weights change. A batch not on the CPU
    (or with grad) goes straight to ``forward``.

    :param forward: ``obs -> ModelOutput`` (``obs`` a tensor or a mapping of tensors) whose
        row ``i`` depends on row ``i`` of ``obs`` only.
    :param capacity: the most rows kept.
    """

    def __init__(self, forward: Callable[[Any], ModelOutput], capacity: int = 1 << 16):
        self.forward = forward
        self.capacity = int(capacity)
        self.slots: dict[bytes, int] = {}
        self.store: list[torch.Tensor] = []

    def clear(self) -> None:
        self.slots.clear()

    def __call__(self, obs: Any) -> ModelOutput:
        host = _host_tensors(obs)
        if host is None:
            return self.forward(obs)
        keys = _row_keys(host).tolist()
        slots = self.slots
        new: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in slots and key not in new:
                new[key] = i
        if len(slots) + len(new) > self.capacity:
            slots.clear()
            new = {key: i for i, key in reversed(list(enumerate(keys)))}
            if len(new) > self.capacity:  # more distinct rows than it may keep
                return self.forward(obs)
        if new:
            rows = torch.tensor(list(new.values()), dtype=torch.long)
            self._put(list(new), self.forward(select_rows(obs, rows)))
        index = torch.tensor([slots[key] for key in keys], dtype=torch.long)
        return ModelOutput(*(t.index_select(0, index) for t in self.store))

    def _put(self, keys: list[bytes], out: ModelOutput) -> None:
        """Keep ``out``'s rows under ``keys``, growing the store as needed."""
        start, end = len(self.slots), len(self.slots) + len(keys)
        if not self.store or end > len(self.store[0]):
            size = min(self.capacity, max(end, 2 * (len(self.store[0]) if self.store else 256)))
            grown = [t.new_empty((size, *t.shape[1:])) for t in out]
            for new, old in zip(grown, self.store, strict=False):
                new[:start] = old[:start]
            self.store = grown
        for t, rows in zip(self.store, out, strict=True):
            t[start:end] = rows
        self.slots.update(zip(keys, range(start, end), strict=True))
