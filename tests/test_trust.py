"""Adversarial input: bad values, crafted files and unsafe run dirs (issue 13).

Every case runs the real command line in-process and asserts: exit code 2, one
line on stderr naming the problem, no traceback, no new files, and every file
that existed before byte-identical afterwards.  Crafted checkpoints try to
import modules, create files and truncate files; nothing may happen.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from typer.testing import CliRunner

from duo_cli.agents import agent_spec, build_agent
from duo_cli.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_policy_checkpoint,
    save_checkpoint,
    save_policy,
)
from duo_cli.cli import app
from duo_cli.config import compose

SMALL = {"_target_": "duo_cli.models.cnn.SmallCNN", "name": "small_cnn", "hidden_dim": 16,
         "bf16": False}
AGENT_POLICY = {"_target_": "duo_cli.policies.agent.AgentPolicy", "name": "agent"}
TASK = "bossfight"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def assert_refused(result, *words: str) -> str:
    """Exit code 2, one stderr line holding ``words``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:], result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _agent(path: Path, num_actions: int = 15, model: dict | None = None, bp: float = 0.1) -> Path:
    cfg = OmegaConf.create({"policy": AGENT_POLICY, "model": model or SMALL,
                            "env": {"name": "procgen", "task": TASK}})
    torch.manual_seed(0)
    return save_policy(path, build_agent(agent_spec(cfg, num_actions), "cpu"), {"bp": bp})


def _edit(src: Path, dst: Path, fn) -> Path:
    data = load_checkpoint(src)
    data.pop("format")
    fn(data)
    return save_checkpoint(dst, data)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good agents plus crafted and broken checkpoint files, and a victim file."""
    d = tmp_path_factory.mktemp("trust")
    good = _agent(d / "good.pt")
    f = {"dir": d, "good": good, "victim": d / "victim.txt"}
    f["victim"].write_text("precious\n")
    f["five"] = _agent(d / "five.pt", num_actions=5)
    f["seven"] = _agent(d / "seven.pt", num_actions=7)
    f["empty"] = d / "empty.pt"
    f["empty"].write_bytes(b"")
    f["text"] = d / "text.pt"
    f["text"].write_text("epoch 1 loss 0.5\n")
    f["random"] = d / "random.pt"
    f["random"].write_bytes(os.urandom(512))
    f["folder"] = d / "folder.pt"
    f["folder"].mkdir()
    truncated = good.read_bytes()
    f["truncated"] = d / "truncated.pt"
    f["truncated"].write_bytes(truncated[: len(truncated) // 2])
    victim = str(f["victim"])
    created = str(d / "created.txt")
    f["created"] = Path(created)
    crafted = {
        # truncates the victim if called: logging.basicConfig(filename=..., filemode="w")
        "truncate": lambda c: c["config"]["model"].update(
            _target_="logging.basicConfig", filename=victim, filemode="w", force=True),
        "import_this": lambda c: c["config"]["model"].update(_target_="this.x"),
        "policy_open": lambda c: c["config"]["policy"].update(
            _target_="builtins.open", file=created, mode="w"),
        "pathlib_touch": lambda c: c["config"]["policy"].update(_target_="pathlib.Path"),
        "model_is_policy": lambda c: c["config"]["model"].update(
            _target_="duo_cli.policies.agent.AgentPolicy"),
        "extra_kwarg": lambda c: c["config"]["model"].update(filename=victim),
        "missing_class": lambda c: c["config"]["model"].update(
            _target_="duo_cli.models.cnn.NoSuchNet"),
        "no_config": lambda c: c.pop("config"),
        "wrong_shapes": lambda c: c["state_dict"].update(
            {k: torch.zeros(3) for k in list(c["state_dict"])[:1]}),
        "bad_kind": lambda c: c.update(kind="robot"),
    }
    for name, fn in crafted.items():
        f[name] = _edit(good, d / f"{name}.pt", fn)
    return f


@pytest.fixture(scope="module")
def coord_ckpt(files) -> Path:
    """A coordinator checkpoint (always_novice) whose run_config points at the good agents."""
    agents = [f"agents.{r}={files['good']}" for r in ("novice", "expert", "sim_novice")]
    run_config = OmegaConf.to_container(
        compose([*agents, f"env.task={TASK}", "algorithm=always_novice"], "coord"), resolve=True)
    payload = {"kind": "coord", "config": {"policy": run_config["policy"]}, "state_dict": {},
               "metadata": {"run_config": run_config, "method": "always_novice"}}
    return save_checkpoint(files["dir"] / "coord.pt", payload)


def _coord_variant(coord_ckpt: Path, name: str, fn) -> Path:
    return _edit(coord_ckpt, coord_ckpt.with_name(f"{name}.pt"), fn)


def _train_coord(files, novice="good", expert="good", *extra):
    return ["train", "--type", "coord", f"env.task={TASK}", "algorithm=always_novice",
            f"agents.novice={files[novice]}", f"agents.expert={files[expert]}",
            f"agents.sim_novice={files['good']}", "torch_threads=1", "progress=false", *extra]


# (name, argv builder(files, run_dir), words the line must hold)
CASES = [
    ("alpha_nan", lambda f, r: ["train", "--type", "coord",
                                "coordination.expert_query_cost_weight=nan"],
     ["expert_query_cost_weight", "finite"]),
    ("alpha_inf", lambda f, r: ["train", "--type", "coord",
                                "coordination.expert_query_cost_weight=inf"],
     ["expert_query_cost_weight", "finite"]),
    ("beta_nan", lambda f, r: ["train", "--type", "coord",
                               "coordination.switch_agent_cost_weight=nan"],
     ["switch_agent_cost_weight"]),
    ("alpha_negative", lambda f, r: ["train", "--type", "coord",
                                     "coordination.expert_query_cost_weight=-1"],
     ["expert_query_cost_weight", ">= 0"]),
    ("temperature_negative", lambda f, r: ["train", "coordination.temperature=-1"],
     ["coordination.temperature", ">= 0"]),
    ("temperature_nan", lambda f, r: ["train", "coordination.temperature=nan"],
     ["coordination.temperature"]),
    ("episodes_zero", lambda f, r: ["eval", str(f["good"]), "evaluation.num_episodes=0"],
     ["evaluation.num_episodes", ">= 1"]),
    ("episodes_negative", lambda f, r: ["eval", str(f["good"]), "evaluation.num_episodes=-5"],
     ["evaluation.num_episodes"]),
    ("seed_null", lambda f, r: ["train", "seed=null"], ["seed", "null"]),
    ("device_nope", lambda f, r: ["train", "device=nope"], ["nope", "cpu"]),
    ("threads_negative", lambda f, r: ["train", "torch_threads=-1"], ["torch_threads"]),
    ("bp_text", lambda f, r: ["train", "--type", "coord", "coordination.base_penalty=abc"],
     ["base_penalty", "abc"]),
    ("target_kl_text", lambda f, r: ["train", "algorithm.target_kl=abc"], ["target_kl", "abc"]),
    ("gamma_too_big", lambda f, r: ["train", "algorithm.gamma=1.5"], ["algorithm.gamma"]),
    ("empty_key", lambda f, r: ["config", "=3"], ["'=3'", "empty"]),
    ("bad_env_task", lambda f, r: ["train", "env.task=nope"], ["env.task", "coinrun"]),
    ("minigrid_bad_task", lambda f, r: ["train", "env=minigrid", "env.task=Maze"],
     ["env.task", "DoorKey", "LavaGap"]),
    ("minigrid_bad_variant", lambda f, r: ["train", "env=minigrid", "env.test.variant=medium"],
     ["env.test.variant", "easy", "hard"]),
    ("cli_model_target", lambda f, r: ["train", "model._target_=logging.basicConfig"],
     ["logging.basicConfig", "SmallCNN"]),
    ("cli_env_target", lambda f, r: ["train", "env._target_=os.system"], ["os.system"]),
    ("cli_model_kwarg", lambda f, r: ["train", f"+model.filename={f['victim']}"],
     ["filename", "hidden_dim"]),
    # broken files
    ("ckpt_missing", lambda f, r: ["eval", str(f["dir"] / "nope.pt")], ["not found"]),
    ("ckpt_empty", lambda f, r: ["eval", str(f["empty"])], ["empty"]),
    ("ckpt_text", lambda f, r: ["eval", str(f["text"])], ["not a duo checkpoint"]),
    ("ckpt_random", lambda f, r: ["eval", str(f["random"])], ["not a duo checkpoint"]),
    ("ckpt_directory", lambda f, r: ["eval", str(f["folder"])], ["directory"]),
    ("ckpt_truncated", lambda f, r: ["eval", str(f["truncated"])], ["truncated"]),
    ("ckpt_no_config", lambda f, r: ["eval", str(f["no_config"])], ["config"]),
    ("ckpt_bad_kind", lambda f, r: ["eval", str(f["bad_kind"])], ["robot", "agent, coord"]),
    ("ckpt_missing_class", lambda f, r: ["eval", str(f["missing_class"])], ["NoSuchNet"]),
    ("ckpt_wrong_shapes", lambda f, r: ["eval", str(f["wrong_shapes"])], ["weights"]),
    # crafted files: nothing imported, created or truncated
    ("craft_truncate_eval", lambda f, r: ["eval", str(f["truncate"])],
     ["logging.basicConfig", "not a known model"]),
    ("craft_truncate_coord", lambda f, r: _train_coord(f, novice="truncate"),
     ["logging.basicConfig"]),
    ("craft_import", lambda f, r: ["eval", str(f["import_this"])], ["this.x"]),
    ("craft_open", lambda f, r: ["eval", str(f["policy_open"])], ["builtins.open"]),
    ("craft_pathlib", lambda f, r: _train_coord(f, expert="pathlib_touch"), ["pathlib.Path"]),
    ("craft_wrong_kind", lambda f, r: ["eval", str(f["model_is_policy"])],
     ["AgentPolicy", "not a model"]),
    ("craft_extra_kwarg", lambda f, r: ["eval", str(f["extra_kwarg"])], ["filename"]),
    ("craft_init_from", lambda f, r: ["train", f"algorithm.init_from={f['truncate']}"],
     ["logging.basicConfig"]),
    # agents that do not fit the env
    ("five_action_agent", lambda f, r: ["eval", str(f["five"])], ["5 actions", "15"]),
    ("five_action_novice", lambda f, r: _train_coord(f, novice="five"),
     ["agents.novice", "5 actions"]),
    ("procgen_agent_on_minigrid", lambda f, r: ["eval", str(f["good"]), "env=minigrid"],
     ["15 actions", "7"]),
    ("frame_agent_on_grid_obs", lambda f, r: ["eval", str(f["seven"]), "env=minigrid"],
     ["cannot read", "(7, 7, 3)"]),
    # run dirs
    ("run_dir_is_file", lambda f, r: ["train", f"run_dir={f['victim']}"], ["is a file"]),
    ("run_dir_uncreatable", lambda f, r: ["eval", str(f["good"]), "run_dir=/proc/duo/run"],
     ["cannot create run dir"]),
]


@pytest.mark.parametrize("name,argv,words", CASES, ids=[c[0] for c in CASES])
def test_refused_with_one_line_and_nothing_written(files, tmp_path, monkeypatch, name, argv,
                                                   words):
    monkeypatch.chdir(tmp_path)  # a default run dir would land in tmp_path/runs
    run_dir = tmp_path / "run"
    args = argv(files, run_dir)
    if not any(a.startswith("run_dir=") for a in args) and args[0] != "config":
        args.append(f"run_dir={run_dir}")
    modules = set(sys.modules)
    before = snapshot(files["dir"])
    assert_refused(invoke(*args), *words)
    assert snapshot(files["dir"]) == before  # pre-existing files byte-identical, none added
    assert not run_dir.exists() and not (tmp_path / "runs").exists()
    assert not files["created"].exists()
    assert "this" not in set(sys.modules) - modules  # nothing imported from the file


def test_eval_default_run_dir_left_out_on_failure(files, tmp_path, monkeypatch):
    """A failed ``duo eval`` leaves no empty runs/eval/<stamp> behind."""
    monkeypatch.chdir(tmp_path)
    assert_refused(invoke("eval", str(files["wrong_shapes"])), "weights")
    assert not (tmp_path / "runs").exists()


def test_coord_eval_refuses_group_override(coord_ckpt, tmp_path):
    assert_refused(invoke("eval", str(coord_ckpt), "algorithm=logit",
                          f"run_dir={tmp_path / 'run'}"), "algorithm=logit", "always_novice")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,edit,words", [
    ("run_config_policy", lambda c: c["metadata"]["run_config"]["policy"].update(
        _target_="builtins.exec"), ["builtins.exec"]),
    ("run_config_env", lambda c: c["metadata"]["run_config"]["env"].update(
        _target_="logging.basicConfig"), ["logging.basicConfig"]),
    ("run_config_alpha_nan", lambda c: c["metadata"]["run_config"]["coordination"].update(
        expert_query_cost_weight=float("nan")), ["expert_query_cost_weight"]),
    ("run_config_missing", lambda c: c["metadata"].pop("run_config"), ["run_config"]),
])
def test_coordinator_run_config_is_data(coord_ckpt, tmp_path, name, edit, words):
    path = _coord_variant(coord_ckpt, name, edit)
    before = snapshot(path.parent)
    assert_refused(invoke("eval", str(path), f"run_dir={tmp_path / 'run'}"), *words)
    assert snapshot(path.parent) == before
    assert not (tmp_path / "run").exists()


def test_coordinator_checkpoint_evaluates(coord_ckpt, tmp_path):
    """The good coordinator file passes the same checks (the closed set is not too closed)."""
    result = invoke("eval", str(coord_ckpt), "evaluation.num_episodes=2",
                    "evaluation.num_envs=2", "split=val_sim", "progress=false",
                    f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 0, (result.output[-2000:], result.exception)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert summary["kind"] == "coord"


# -- resume never clobbers ---------------------------------------------------------------


def _finished_run(run_dir: Path) -> dict[str, bytes]:
    run_dir.mkdir()
    (run_dir / "best_val_sim.pt").write_bytes(b"PK\x03\x04 a coordinator")
    (run_dir / "config.yaml").write_text("type: coord\n")
    (run_dir / "metrics.jsonl").write_text('{"global_step": 1}\n')
    return snapshot(run_dir)


@pytest.mark.parametrize("command", [["train", "--type", "agent"],
                                     ["train", "--type", "coord", "algorithm=always_novice"]])
def test_resume_without_last_pt_refuses_a_non_empty_dir(tmp_path, command):
    run_dir = tmp_path / "finished"
    before = _finished_run(run_dir)
    assert_refused(invoke(*command, "resume=true", f"run_dir={run_dir}"), "no last.pt",
                   str(run_dir))
    assert snapshot(run_dir) == before


def test_resume_with_another_model_keeps_config(files, tmp_path):
    run_dir = tmp_path / "run"
    _edit(files["good"], run_dir / "last.pt", lambda c: c.update(train_state={}))
    (run_dir / "config.yaml").write_text("model: small_cnn\n")
    before = snapshot(run_dir)
    assert_refused(invoke("train", "model=impala", "resume=true", f"run_dir={run_dir}"),
                   "last.pt", "impala")
    assert snapshot(run_dir) == before


def test_resume_into_empty_dir_is_allowed(tmp_path, files):
    from duo_cli.rundir import make_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".last.pt.x1y2.tmp").write_bytes(b"half a save")  # left by kill -9
    cfg = compose(["resume=true", f"run_dir={run_dir}"])
    assert make_run_dir(cfg, "agent") == run_dir
    assert list(run_dir.iterdir()) == []  # the stale temp file is gone


def test_runs_started_in_the_same_second_get_their_own_dirs(tmp_path, monkeypatch):
    """Two jobs side by side that start in the same second once shared one run dir."""
    from duo_cli.rundir import make_run_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261206-181358")
    cfg = compose([])
    # the other job creates its dir between this job's look and its mkdir: a look
    # sees nothing, so only an exclusive mkdir can tell the name is taken
    monkeypatch.setattr(Path, "exists", lambda self: False)
    dirs = [make_run_dir(cfg, "coord") for _ in range(3)]
    assert len(set(dirs)) == 3 and all(d.is_dir() for d in dirs)
    assert [d.name for d in dirs] == [f"{dirs[0].name}{s}" for s in ("", "-1", "-2")]


# -- writes that fail ------------------------------------------------------------------------


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import duo_cli.commands.train_agent

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    # the name the command writes config.yaml with (duo_cli.rundir.write_text)
    monkeypatch.setattr(duo_cli.commands.train_agent, "write_text", full)
    run_dir = tmp_path / "run"
    line = assert_refused(invoke("train", "env.num_envs=2", "evaluation.train_splits=[]",
                                 "torch_threads=1", f"run_dir={run_dir}"), "No space left")
    assert "config.yaml" in line
    assert not run_dir.exists()


def test_failed_checkpoint_write_is_one_line_and_keeps_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"v": 1})
    before = path.read_bytes()

    def enforce_fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\n"
                           "frame #0: c10::ThrowEnforceNotMet\nfile write failed")

    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"v": 2})
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file


def test_random_bytes_message_does_not_suggest_unsafe_loading(files):
    with pytest.raises(CheckpointError) as info:
        load_policy_checkpoint(files["random"])
    assert "weights_only" not in str(info.value)
