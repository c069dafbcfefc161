"""The benchmark's full grid as suites: every new algorithm YAML composes, names are
unique, and the suites' job counts are the benchmark's."""

from __future__ import annotations

import pytest

from duo_cli import sweep
from duo_cli.config import compose, group_options
from duo_cli.policies.logit import METRICS
from duo_cli.registry import resolve
from duo_cli.summaries import job_traits

NON_RL = ["always_novice", "always_expert", "random_half", "random",
          *(f"logit_{m}" for m in METRICS),
          *(f"ood_{f}" for f in ("obs", "hidden", "hidden_obs", "dist", "obs_dist",
                                 "hidden_dist", "obs_hidden_dist"))]
SETS = {"obs": ["obs"], "hidden": ["novice_hidden"], "hidden_obs": ["novice_hidden", "obs"],
        "dist": ["novice_dist"], "obs_dist": ["obs", "novice_dist"],
        "hidden_dist": ["novice_hidden", "novice_dist"],
        "obs_hidden_dist": ["obs", "novice_hidden", "novice_dist"]}


def test_suites_job_counts():
    assert len(NON_RL) == 16  # the benchmark's non-RL methods
    assert sweep.validate(["benchmark=yrc_minigrid"]) == 3 * (16 + 2)
    assert sweep.validate(["benchmark=yrc_coinrun"]) == 16
    params = [o.input_line for o in sweep.sweep_overrides(["benchmark=yrc_minigrid"])]
    methods = next(p for p in params if p.startswith("algorithm=")).split("=")[1].split(",")
    # the skyline on the sets dominated on no task (tests/test_skyline_card.py)
    assert methods[:16] == NON_RL and methods[16:] == ["skyline_obs", "skyline_hidden_obs"]
    cfg = compose(["benchmark=yrc_minigrid"], "coord")
    assert list(cfg.coordination.alphas) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # the benchmark's best of seven: the same suite with the skyline on every set
    seven = [o.input_line for o in sweep.sweep_overrides(["benchmark=yrc_minigrid_seven"])]
    assert seven[0] == params[0] and seven[2:4] == params[2:4]
    listed = seven[1].split("=")[1].split(",")
    assert listed[:18] == methods and sorted(listed[16:]) == sorted(f"skyline_{s}" for s in SETS)
    assert compose(["benchmark=yrc_minigrid_seven"], "coord").coordination == cfg.coordination
    assert cfg.coordination.cost_decimals is None and cfg.env.random_action_prob == 0


@pytest.mark.parametrize("name", [*NON_RL, *(f"skyline_{s}" for s in SETS)])
def test_every_variant_composes_with_its_own_name(name):
    assert name in group_options("algorithm")
    cfg = compose(["env=minigrid", f"algorithm={name}"], "coord")
    assert cfg.algorithm.name == name
    # what the report counts it as, declared by its class and config, not its name
    traits = job_traits(resolve(cfg.algorithm._target_, "algorithm"), cfg)
    assert (traits.learns, traits.shares_rollouts) == ((True, False) if name.startswith("skyline")
                                                       else (False, True))
    assert traits.role == ("skyline" if name.startswith("skyline") else "method")
    kind, _, rest = name.partition("_")
    if kind == "logit":
        assert cfg.policy.metric == rest and rest in METRICS
    elif kind == "ood":
        assert cfg.policy.feature.split("+") == SETS[rest]
        assert cfg.algorithm._target_.endswith("OODSearch")
    elif kind == "skyline":
        assert list(cfg.policy.features) == SETS[rest]
        assert cfg.coordination.train_setting == "test"
        # its total_timesteps: the skyline card's budget (tests/test_skyline_card.py)
    elif name == "random_half":
        assert list(cfg.algorithm.probs) == [0.5]
