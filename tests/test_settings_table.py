"""Every declared setting of every policy and algorithm, given a bad value, on every command.

The table is generated from the classes' ``Settings`` dataclasses (through the registry):
each setting gets a value of the wrong type, one out of its range (where it has one) and an
unknown choice (where it has choices).  ``duo train``, ``duo eval`` and ``duo serve`` each
refuse it at compose time: exit 2, one line naming the key, no traceback, no run dir.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duo_cli.cli import app
from duo_cli.config import compose, group_options
from duo_cli.registry import registered, resolve
from duo_cli.settings import settings_fields


@functools.cache
def _option_of() -> dict[type, str]:
    """class -> an ``algorithm=`` option whose composed config uses it (first by name)."""
    out: dict[type, str] = {}
    for option in group_options("algorithm"):
        cfg = compose([f"algorithm={option}"], "coord")
        for kind in ("policy", "algorithm"):
            out.setdefault(resolve(cfg[kind]._target_, kind), option)
    return out


def _scalar(hint) -> type:
    """The type a bad value is built for: the list's item type, the non-null alternative."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    return base


def _bad_values(hint, meta) -> list[tuple[str, str]]:
    """``(what, override value)`` pairs that the setting must refuse."""
    base = _scalar(hint)
    is_list = typing.get_origin(base) is list
    item = typing.get_args(base)[0] if is_list else base
    wrap = (lambda v: f"[{v}]") if is_list else (lambda v: v)
    wrong = {bool: "3", int: "abc", float: "abc", str: "5"}.get(item, "5")
    out = [("wrong type", wrap(wrong))]
    if meta.get("low") is not None:
        low = meta["low"]
        out.append(("below range", wrap(str(low if meta.get("low_open") else low - 1))))
    if meta.get("high") is not None:
        out.append(("above range", wrap(str(meta["high"] + 1))))
    if meta.get("choices"):
        out.append(("unknown choice", wrap("nope")))
    return out


def _table() -> list[tuple[str, str, str, str]]:
    """``(algorithm option, key, what, bad value)`` for every declared setting; a setting
    declared identically by two classes (AgentPPO inherits PPO's) is checked once."""
    rows, seen = [], set()
    for kind in ("policy", "algorithm"):
        for cls in sorted(set(registered(kind).values()), key=lambda c: c.__qualname__):
            option = _option_of().get(cls)
            if option is None:
                continue  # a class no shipped option uses (none today)
            for name, hint, meta in settings_fields(cls.Settings):
                if (kind, name, str(hint), str(meta)) in seen:
                    continue
                seen.add((kind, name, str(hint), str(meta)))
                for what, value in _bad_values(hint, meta):
                    rows.append((option, f"{kind}.{name}", what, value))
    return rows


def test_table_covers_every_setting_of_every_class():
    rows = _table()
    keys = {(option, key) for option, key, _, _ in rows}
    for kind in ("policy", "algorithm"):
        for cls in set(registered(kind).values()):
            for name, _, _ in settings_fields(cls.Settings):
                assert any(k == f"{kind}.{name}" for _, k in keys), (cls, name)
    assert len(rows) > 40


COMMANDS = {
    "train": lambda ckpt: ["train", "--type", "coord"],
    "eval": lambda ckpt: ["eval", ckpt],
    "serve": lambda ckpt: ["serve", ckpt],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_bad_setting_is_refused_in_one_line(tmp_path, command):
    ckpt = str(tmp_path / "never-read.pt")  # the config is refused before any file is read
    failures = []
    for i, (option, key, what, value) in enumerate(_table()):
        run_dir = tmp_path / f"run{i}"
        args = [*COMMANDS[command](ckpt), f"algorithm={option}", f"{key}={value}",
                f"run_dir={run_dir}"]
        res = CliRunner().invoke(app, args)
        lines = res.output.strip().splitlines()
        ok = (res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
              and key.split(".")[-1] in lines[0] and "Traceback" not in res.output
              and not Path(run_dir).exists())
        if not ok:
            failures.append(f"{command} {option} {key}={value} ({what}): exit {res.exit_code}: "
                            f"{res.output.strip()[:300]}")
    assert not failures, "\n".join(failures)
