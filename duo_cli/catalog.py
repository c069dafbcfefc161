"""duo's built-in classes and installed plugins, registered into :mod:`duo_cli.registry`.

Importing this module fills the closed set of classes a config or a file may name.
It sits above the models, policies, algorithms and env factories (it imports them)
and below everything that reads a config or a file (config checks, agents,
coordination, commands), which import it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from duo_cli.algorithms.ppo import PPO, AgentPPO
from duo_cli.algorithms.search import Always, AskEveryKSearch, LogitSearch, OODSearch, RandomSearch
from duo_cli.envs.minigrid import make_minigrid
from duo_cli.envs.procgen import make_procgen
from duo_cli.models.cnn import ImpalaCNN, SmallCNN
from duo_cli.models.grid import GridCNN
from duo_cli.policies.agent import AgentPolicy
from duo_cli.policies.always import AlwaysPolicy
from duo_cli.policies.ask_every_k import AskEveryKPolicy
from duo_cli.policies.coord_ppo import CoordPPOPolicy
from duo_cli.policies.logit import LogitPolicy
from duo_cli.policies.ood import OODPolicy
from duo_cli.policies.random import RandomPolicy
from duo_cli.registry import KINDS, register

BUILTINS = {
    "model": (SmallCNN, ImpalaCNN, GridCNN),
    "policy": (AgentPolicy, AlwaysPolicy, AskEveryKPolicy, CoordPPOPolicy, LogitPolicy,
               OODPolicy, RandomPolicy),
    "algorithm": (PPO, AgentPPO, Always, AskEveryKSearch, LogitSearch, OODSearch, RandomSearch),
    "env": (make_procgen, make_minigrid),
}


def _register_all() -> None:
    for kind, objs in BUILTINS.items():
        for obj in objs:
            register(kind, obj)
    for kind in KINDS:
        for ep in entry_points(group=f"duo_cli.{kind}s"):
            # the name in files is the entry point's name; loading imports installed code only
            register(kind, ep.load(), ep.name)


_register_all()
