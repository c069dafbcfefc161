"""Actor-critic model for MiniGrid's egocentric 7x7x3 grid observations."""

from __future__ import annotations

import torch
from torch import nn

from duo_cli.models.base import Model, ModelOutput, init_layer, trunk_precision
from duo_cli.models.rows import unique_rows

#: largest value of each channel of MiniGrid's encoding (object type, colour, state)
_CHANNEL_MAX = (10.0, 5.0, 2.0)


class GridCNN(Model):
    """Small conv trunk over a ``(7, 7, 3)`` uint8 grid: ~140k parameters, fast on CPU.

    Each channel is scaled to [0, 1] by its largest value; two 2x2 convolutions
    and a third give a 64 x 4 x 4 map, flattened into ``hidden``. The trunk runs under
    bf16 autocast when ``bf16`` (:func:`~duo_cli.models.base.trunk_precision`): the shipped
    agents (hidden 128) are fp32, where bf16 gains little; the coordinator's obs encoder
    (hidden 256, its 1024 x 256 layer half of the work) is bf16, 1.5-1.8x faster
    forward+backward on a CPU with AVX512-BF16 (``bench/coord_ppo.py``); fp32 on a CPU
    without bf16 arithmetic, where it would be 1.1-16x slower. The trunk runs once per
    distinct view of a batch (``inputs_repeat``, :mod:`duo_cli.models.rows`).

    :param num_actions: size of the discrete action space.
    :param hidden_dim: width of the hidden feature layer.
    :param channels: output channels of the three convolutions.
    """

    inputs_repeat = True  # 7x7 views recur: the trunk runs once per distinct one

    def __init__(self, num_actions: int, hidden_dim: int = 128,
                 channels: tuple[int, ...] = (16, 32, 64), bf16: bool = False, **_: object):
        super().__init__()
        c1, c2, c3 = channels
        self.trunk = nn.Sequential(
            init_layer(nn.Conv2d(3, c1, 2)), nn.ReLU(inplace=True),
            init_layer(nn.Conv2d(c1, c2, 2)), nn.ReLU(inplace=True),
            init_layer(nn.Conv2d(c2, c3, 2)), nn.ReLU(inplace=True),
            nn.Flatten(),
            init_layer(nn.Linear(c3 * 4 * 4, hidden_dim)), nn.ReLU(inplace=True),
        )
        self.hidden_dim = hidden_dim
        self.logit_dim = num_actions
        self.bf16 = bool(bf16)
        self.register_buffer("scale", 1.0 / torch.tensor(_CHANNEL_MAX).view(1, 3, 1, 1),
                             persistent=False)
        self.policy_head = init_layer(nn.Linear(hidden_dim, num_actions), std=0.01)
        self.value_head = init_layer(nn.Linear(hidden_dim, 1), std=1.0)

    def forward(self, obs: torch.Tensor) -> ModelOutput:
        rows = unique_rows(obs)  # views recur: the trunk runs on the distinct ones
        if rows is not None:
            obs = obs.index_select(0, rows[0])
        # NCHW in contiguous memory: on 7x7 grids the convolutions and their backward run
        # ~1.2-1.4x faster than on the channels_last view of the NHWC frames
        # scaled in fp32 (the codes are small integers, exact in either precision); under
        # bf16 autocast the first convolution casts its input
        x = obs.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        with trunk_precision(obs.device, self.bf16):
            hidden = self.trunk(x * self.scale)
        hidden = hidden.float()  # no-op in fp32
        if rows is not None:
            hidden = hidden.index_select(0, rows[1])
        return ModelOutput(self.policy_head(hidden), self.value_head(hidden).squeeze(-1), hidden)
