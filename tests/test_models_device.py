"""Models run on any device: the trunk's dtype follows the input's device, not a hard-coded CPU.

The ``meta`` device (shapes only, no autocast) stands in for a device other than the CPU:
a forward pass there must work and give outputs of the right shapes, bf16 or not.
"""

from __future__ import annotations

import pytest
import torch

from duo_cli.catalog import BUILTINS
from duo_cli.models import base
from duo_cli.models.base import trunk_dtype, trunk_precision
from duo_cli.models.cnn import ImpalaCNN, SmallCNN
from duo_cli.models.grid import GridCNN
from duo_cli.policies.coord_ppo import CoordNet

META = torch.device("meta")
BATCH, NUM_ACTIONS = 2, 15
#: the observation each built-in model reads (uint8, NHWC)
OBS_SHAPE = {SmallCNN: (64, 64, 3), ImpalaCNN: (64, 64, 3), GridCNN: (7, 7, 3)}


def test_every_builtin_model_is_covered():
    assert set(BUILTINS["model"]) == set(OBS_SHAPE), "give the new model its obs shape here"


@pytest.fixture(params=[True, False], ids=["cpu_bf16", "cpu_no_bf16"])
def cpu_bf16(request, monkeypatch):
    """This CPU as one that computes bf16 (AVX512-BF16) and as one that would emulate it."""
    monkeypatch.setattr(base, "cpu_computes_bf16", lambda: request.param)
    return request.param


def test_cpu_bf16_follows_the_cpus_instructions():
    caps = torch.cpu.get_capabilities()
    assert base.cpu_computes_bf16() == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def test_dtype_choice(cpu_bf16):
    for device in ("cpu", torch.device("cpu"), "meta", META, "cuda", "mps", "xpu"):
        assert trunk_dtype(device, False) == torch.float32
    cpu = torch.bfloat16 if cpu_bf16 else torch.float32  # emulated bf16 is up to 16x slower
    assert trunk_dtype("cpu", True) == trunk_dtype(torch.device("cpu"), True) == cpu
    assert trunk_dtype(META, True) == torch.float32  # meta has no autocast
    assert trunk_dtype("cuda:0", True) == (torch.bfloat16 if torch.cuda.is_bf16_supported()
                                           else torch.float32)
    with trunk_precision(META, True) as dtype:
        assert dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    with trunk_precision("cpu", True) as dtype:
        assert dtype == cpu and torch.is_autocast_enabled("cpu") == cpu_bf16
        if cpu_bf16:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("cls", [SmallCNN, ImpalaCNN, GridCNN], ids=lambda c: c.__name__)
def test_model_forward_on_meta(cls, bf16):
    model = cls(num_actions=NUM_ACTIONS, hidden_dim=32, bf16=bf16).to(META)
    obs = torch.zeros((BATCH, *OBS_SHAPE[cls]), dtype=torch.uint8, device=META)
    out = model(obs)
    assert out.logits.shape == (BATCH, NUM_ACTIONS)
    assert out.value.shape == (BATCH,)
    assert out.hidden.shape == (BATCH, 32)
    for t in out:
        assert t.device.type == "meta" and t.dtype == torch.float32


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("cls", [SmallCNN, ImpalaCNN, GridCNN], ids=lambda c: c.__name__)
def test_model_on_cpu_keeps_its_precision(cls, bf16, cpu_bf16):
    """On CPU the trunk runs in bf16 when asked and the CPU computes bf16, else in fp32;
    outputs are fp32 either way."""
    model = cls(num_actions=NUM_ACTIONS, hidden_dim=32, bf16=bf16)
    seen = []
    model.trunk.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = model(torch.randint(0, 3, (BATCH, *OBS_SHAPE[cls]), dtype=torch.uint8))
    assert seen == [torch.bfloat16 if bf16 and cpu_bf16 else torch.float32]
    assert out.hidden.dtype == out.logits.dtype == out.value.dtype == torch.float32
    assert torch.isfinite(out.logits).all()


FEATURES = ["obs", "novice_hidden", "novice_dist"]
DIMS = {"novice_hidden": 8, "novice_dist": 4}


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("target, shape", [
    ("duo_cli.models.grid.GridCNN", (7, 7, 3)),
    ("duo_cli.models.cnn.SmallCNN", (64, 64, 3)),
], ids=["grid", "frames"])
def test_coord_net_forward_on_meta(target, shape, bf16):
    net = CoordNet(FEATURES, DIMS, hidden_dim=32, bf16=bf16, obs_model={"_target_": target}).to(META)
    obs = {
        "base_obs": torch.zeros((BATCH, *shape), dtype=torch.uint8, device=META),
        "novice_hidden": torch.zeros((BATCH, DIMS["novice_hidden"]), device=META),
        "novice_logits": torch.zeros((BATCH, DIMS["novice_dist"]), device=META),
    }
    out = net(obs)
    assert out.logits.shape == (BATCH, 2)
    assert out.value.shape == (BATCH,)
    assert out.hidden.shape == (BATCH, 32)
    assert all(t.device.type == "meta" for t in out)
