"""A learned coordinator: an actor-critic over any mix of CoordEnv features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from duo_cli.errors import ConfigError
from duo_cli.models import build_model
from duo_cli.models.base import Model, ModelOutput, init_layer
from duo_cli.models.rows import select_rows, unique_rows
from duo_cli.policies.base import sample_actions
from duo_cli.policies.coord import CoordPolicy, input_key
from duo_cli.settings import setting

FEATURES = ("obs", "novice_hidden", "novice_dist", "expert_hidden", "expert_dist")


class CoordNet(Model):
    """Encodes the chosen features, concatenates them, and outputs 2 logits and a value.

    ``obs`` goes through the trunk of ``obs_model`` (a model config node, by default the
    composed ``model``: the small CNN on Procgen frames, the grid CNN on MiniGrid) with
    this net's ``hidden_dim`` and ``bf16``; ``*_hidden`` are used as they are;
    ``*_dist`` are the softmax of the agent's logits.
    """

    def __init__(self, features: list[str], dims: Mapping[str, int], hidden_dim: int = 256,
                 bf16: bool = True, obs_model: Mapping[str, Any] | None = None):
        super().__init__()
        self.features = list(features)
        #: the CoordEnv observation key each feature reads
        self.inputs = [input_key(f) for f in self.features]
        self.hidden_dim = hidden_dim
        self.logit_dim = 2
        width = 0
        self.cnn = None
        if "obs" in self.features:
            spec = dict(obs_model or {"_target_": "duo_cli.models.cnn.SmallCNN"})
            spec.update(hidden_dim=hidden_dim, bf16=bf16)
            self.cnn = build_model(spec, "policy.obs_model", num_actions=1)
            self.inputs_repeat = self.cnn.inputs_repeat
            width += hidden_dim
        for f in self.features:
            if f != "obs":
                width += dims[f]
        self.mlp = nn.Sequential(init_layer(nn.Linear(width, hidden_dim)), nn.ReLU())
        self.policy_head = init_layer(nn.Linear(hidden_dim, 2), std=0.01)
        self.value_head = init_layer(nn.Linear(hidden_dim, 1), std=1.0)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> ModelOutput:
        inputs = {key: obs[key] for key in self.inputs}
        rows = unique_rows(*inputs.values()) if self.inputs_repeat else None
        if rows is not None:
            inputs = select_rows(inputs, rows[0])
        parts = []
        for f, key in zip(self.features, self.inputs, strict=True):
            if f == "obs":
                parts.append(self.cnn(inputs[key]).hidden)
            elif f.endswith("_dist"):
                parts.append(torch.softmax(inputs[key].float(), dim=-1))
            else:
                parts.append(inputs[key].float())
        hidden = self.mlp(torch.cat(parts, dim=-1))
        out = ModelOutput(self.policy_head(hidden), self.value_head(hidden).squeeze(-1), hidden)
        if rows is None:
            return out
        return ModelOutput(*(t.index_select(0, rows[1]) for t in out))


class CoordPPOPolicy(CoordPolicy):
    """Samples NOVICE/EXPERT from a :class:`CoordNet` (trained by PPO)."""

    @dataclass(frozen=True)
    class Settings:
        features: list[str] = setting(choices=FEATURES, doc="CoordEnv features the net reads "
                                                             "(expert_* need open_expert)")
        hidden_dim: int = setting(low=1, doc="width of the hidden layer (and of the obs encoder)")
        bf16: bool = setting(doc="run the obs encoder under bf16 autocast where the device computes bf16")
        obs_model: dict[str, Any] | None = setting(doc="the model config node encoding obs")

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        s = self.settings
        if not s.features:
            raise ConfigError(f"bad value for policy.features: []; expected a list of "
                              f"{', '.join(FEATURES)}")
        space = env.single_observation_space
        for f in s.features:
            if f != "obs" and input_key(f) not in space.spaces:
                raise ConfigError(f"policy.features {f!r} needs coordination.open_expert=true")
        dims = {f: space[input_key(f)].shape[0] for f in s.features if f != "obs"}
        self.model = CoordNet(list(s.features), dims, s.hidden_dim, s.bf16,
                              s.obs_model).to(self.device)

    def forward(self, obs: Mapping[str, Any]) -> ModelOutput:
        t = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).to(self.device)
             for k, v in obs.items()}
        return self.model(t)

    @torch.no_grad()
    def act(self, obs, temperature: float = 1.0) -> torch.Tensor:
        return sample_actions(self.forward(obs).logits, temperature)

    @torch.no_grad()
    def choice_probs(self, obs, temperature: float = 1.0) -> np.ndarray:
        """softmax(logits / temperature)[:, EXPERT]; temperature 0: 1 where act's argmax is EXPERT."""
        logits = self.forward(obs).logits.float()
        if temperature <= 0:
            return (logits.argmax(dim=-1) == self.EXPERT).double().cpu().numpy()
        return torch.softmax(logits / temperature, dim=-1)[:, self.EXPERT].double().cpu().numpy()

    def get_params(self):
        return self.model.state_dict()

    def set_params(self, params):
        self.model.load_state_dict(params)

    def describe(self) -> str:
        return f"features={'+'.join(self.model.features)}"
