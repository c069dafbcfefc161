"""Forwards once per distinct row (duo_cli.models.rows): the same function, fewer rows.

Tolerances: a model on the distinct rows and the same model on every row differ only in
the kernels' blocking and in the order autograd sums a repeated row's gradients, i.e. in
the last bits of fp32 (1e-5 relative). A wrong index or a lost gradient differs by O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import duo_cli.catalog  # noqa: F401  (registers the built-in models CoordNet builds)
from duo_cli.coordination.step import AgentStep
from duo_cli.models import grid
from duo_cli.models.base import ModelOutput
from duo_cli.models.cnn import SmallCNN
from duo_cli.models.grid import GridCNN
from duo_cli.models.rows import ForwardMemo, unique_rows
from duo_cli.policies import coord_ppo
from duo_cli.policies.agent import AgentPolicy
from duo_cli.policies.coord_ppo import CoordNet

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _views(n: int, distinct: int, seed: int = 0) -> torch.Tensor:
    """``n`` MiniGrid-like 7x7x3 views, drawn from ``distinct`` different ones."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, 3, (distinct, 7, 7, 3), generator=g, dtype=torch.uint8)
    return pool[torch.randint(0, distinct, (n,), generator=g)]


def test_unique_rows_by_hand():
    a = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2]], dtype=torch.uint8)
    first, inverse = unique_rows(a)
    assert first.tolist() == [0, 2] and inverse.tolist() == [0, 0, 1, 0]
    # a row is distinct when any of the tensors differs there (distinct rows come sorted
    # by their bytes: 0.25 sorts before [3, 4])
    b = torch.tensor([0.5, 0.5, 1.0, 0.25])
    first, inverse = unique_rows(a, b)
    assert sorted(first.tolist()) == [0, 2, 3]
    assert torch.equal(a[first][inverse], a) and torch.equal(b[first][inverse], b)
    assert unique_rows(a[1:3]) is None  # every row distinct
    assert unique_rows(a[:1]) is None  # one row
    assert unique_rows(a.to("meta")) is None  # not on the CPU: no sort, no sync
    assert unique_rows(b.requires_grad_()) is None


def _fake(calls: list[int]):
    """A forward whose row i depends on row i only; records how many rows it ran on."""
    def forward(obs):
        x = obs["a"] if isinstance(obs, dict) else obs
        x = x.float().reshape(len(x), -1)
        calls.append(len(x))
        return ModelOutput(2 * x, x.sum(-1), x + 1)
    return forward


def test_memo_runs_each_row_once_and_returns_what_forward_would():
    calls: list[int] = []
    memo = ForwardMemo(_fake(calls))
    a, b, c = (torch.full((1, 3), v, dtype=torch.uint8) for v in (1, 2, 3))
    first = memo(torch.cat([a, a, b]))
    assert calls == [2]  # a and b, a once
    second = memo(torch.cat([b, c, a, c]))
    assert calls == [2, 1]  # only c is new
    want = _fake([])(torch.cat([b, c, a, c]))
    for got, exp in zip(second, want, strict=True):
        assert torch.equal(got, exp)
    assert first.value.tolist() == [3.0, 3.0, 6.0]
    memo(torch.cat([a, b, c]))
    assert calls == [2, 1]  # all met before: no forward


def test_memo_forgets_at_capacity_and_stays_right():
    calls: list[int] = []
    memo = ForwardMemo(_fake(calls), capacity=2)
    rows_ = [torch.full((1, 2), v, dtype=torch.uint8) for v in range(4)]
    memo(torch.cat(rows_[:2]))
    out = memo(torch.cat([rows_[2], rows_[3], rows_[2]]))  # 2 new rows would pass capacity
    assert calls == [2, 2] and len(memo.slots) == 2
    assert out.value.tolist() == [4.0, 6.0, 4.0]
    memo.clear()
    memo(torch.cat(rows_[:2]))
    assert calls == [2, 2, 2]
    out = memo(torch.cat(rows_[:3]))  # more distinct rows than it may keep: all computed
    assert calls == [2, 2, 2, 3] and out.value.tolist() == [0.0, 2.0, 4.0]


def test_memo_of_a_mapping_keys_on_every_value():
    calls: list[int] = []
    memo = ForwardMemo(_fake(calls))
    obs = {"a": torch.tensor([[1], [1]], dtype=torch.uint8), "b": torch.tensor([[0.0], [1.0]])}
    memo(obs)
    assert calls == [2]  # same "a", different "b": two rows


def test_memo_passes_accelerator_batches_through():
    calls: list[int] = []
    memo = ForwardMemo(_fake(calls))
    x = torch.zeros((4, 3), dtype=torch.uint8, device="meta")
    assert memo(x).logits.device.type == "meta" and calls == [4] and not memo.slots


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def test_grid_cnn_on_distinct_rows_is_the_same_function(monkeypatch):
    torch.manual_seed(0)
    model = GridCNN(num_actions=7, hidden_dim=32)
    assert model.inputs_repeat
    obs = _views(64, 9)
    w = torch.randn(64, 7)
    deduped = model(obs)
    grads = _grads(model, (deduped.logits * w).sum() + deduped.value.pow(2).sum())
    monkeypatch.setattr(grid, "unique_rows", lambda *t: None)
    full = model(obs)
    want = _grads(model, (full.logits * w).sum() + full.value.pow(2).sum())
    for got, exp in zip(deduped, full, strict=True):
        torch.testing.assert_close(got, exp, **TOL)
    for got, exp in zip(grads, want, strict=True):
        torch.testing.assert_close(got, exp, **TOL)


def test_coord_net_on_distinct_rows_is_the_same_function(monkeypatch):
    torch.manual_seed(0)
    spec = {"_target_": "duo_cli.models.grid.GridCNN"}
    net = CoordNet(["obs", "novice_hidden", "novice_dist"], {"novice_hidden": 8, "novice_dist": 7},
                   hidden_dim=32, bf16=False, obs_model=spec)
    assert net.inputs_repeat
    base = _views(48, 5)
    feats = torch.randn(5, 15)[torch.arange(48) % 5]  # repeats along with some views only
    obs = {"base_obs": base, "novice_hidden": feats[:, :8], "novice_logits": feats[:, 8:]}
    deduped = net(obs)
    grads = _grads(net, deduped.logits.sum() + deduped.value.pow(2).sum())
    monkeypatch.setattr(coord_ppo, "unique_rows", lambda *t: None)
    monkeypatch.setattr(grid, "unique_rows", lambda *t: None)
    full = net(obs)
    want = _grads(net, full.logits.sum() + full.value.pow(2).sum())
    for got, exp in zip(deduped, full, strict=True):
        torch.testing.assert_close(got, exp, **TOL)
    for got, exp in zip(grads, want, strict=True):
        torch.testing.assert_close(got, exp, **TOL)


@pytest.mark.parametrize("recurrent", [False, True])
def test_agent_step_memoises_frozen_grid_agents_only(recurrent):
    grid_agent = AgentPolicy(GridCNN(num_actions=7, hidden_dim=16))
    other = AgentPolicy(GridCNN(num_actions=7, hidden_dim=16))
    other.model.inputs_repeat = False  # as SmallCNN's 64x64 frames
    assert not SmallCNN(num_actions=15, hidden_dim=16).inputs_repeat
    step = AgentStep(grid_agent, other, 1.0, False, "cpu", recurrent=recurrent)
    assert isinstance(step.novice_forward, ForwardMemo) != recurrent
    assert not isinstance(step.expert_forward, ForwardMemo)
    obs = _views(16, 3).numpy()
    torch.manual_seed(1)
    observed = step.observe(obs)
    torch.manual_seed(1)
    want = grid_agent.forward(obs)
    np.testing.assert_allclose(observed.obs["novice_hidden"], want.hidden.detach().numpy(), **TOL)
