"""The ``duo`` command line (Typer). Parses argv, hands over, and turns every user error
(:class:`~duo_cli.errors.DuoError`) into one line and exit code 2.

Each command imports its module when it runs, not at start-up: ``duo --help`` (and a
command's own start) must not pay for torch, scipy and FastAPI (6 s here) when it needs
none of them.  These are the only imports of duo's modules inside functions; they point
down (cli is the top layer), so they cannot hide a cycle.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console

from duo_cli.errors import DuoError, one_line

app = typer.Typer(
    name="duo",
    help="Learn to coordinate a novice and an expert agent (YRC). "
    "Every command takes Hydra overrides: key=value or group=option.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Overrides = Annotated[
    list[str] | None, typer.Argument(help="Hydra overrides, e.g. env.task=coinrun seed=1")
]


def _console() -> Console:
    return Console()


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _compose(overrides: list[str] | None, type_: str = "agent"):
    """Compose the primary config of ``--type`` (agent: config.yaml, coord: coord.yaml)."""
    from duo_cli.config import compose

    if type_ not in ("agent", "coord"):
        _fail(f"unknown --type {type_!r}; valid choices: agent, coord")
    try:
        return compose(list(overrides or []), "coord" if type_ == "coord" else "config")
    except DuoError as exc:
        _fail(one_line(exc))


def _run(fn, *args, interrupt_hint: str = "re-run with resume=true and the same run_dir to continue"):
    """Run a command body; user errors become one line and exit code 2."""
    try:
        return fn(*args)
    except DuoError as exc:
        _fail(one_line(exc))
    except OSError as exc:  # unwritable dir, disk full, ... (files it created are removed)
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot write{where}: {exc.strerror or one_line(exc)}")
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {interrupt_hint}", err=True)
        raise typer.Exit(130) from None


@app.command()
def train(
    overrides: Overrides = None,
    type_: Annotated[
        str, typer.Option("--type", "-t", help="what to train: agent | coord")
    ] = "agent",
) -> None:
    """Train an agent (PPO on a base env) or a coordinator (on CoordEnv)."""
    cfg = _compose(overrides, type_)
    if type_ == "agent":
        from duo_cli.commands.train_agent import train_agent as fn
    else:
        from duo_cli.commands.train_coord import train_coord as fn
    console = _console()
    run_dir = _run(fn, cfg, console)
    console.print(f"run dir: {run_dir}", soft_wrap=True)


@app.command(name="eval")
def eval_(
    checkpoint: Annotated[str, typer.Argument(help="an agent or coordinator checkpoint (.pt)")],
    overrides: Overrides = None,
    from_log: Annotated[
        str | None, typer.Option("--from-log", help="estimate the coordinator's return from "
                                 "the episodes a duo serve RUN_DIR logged (off-policy)")
    ] = None,
) -> None:
    """Evaluate a saved agent or coordinator on the splits and print the table."""
    cfg = _compose(overrides)
    if from_log:
        from duo_cli.serve.offpolicy import evaluate_from_log as fn

        args = (cfg, checkpoint, from_log)
    else:
        from duo_cli.commands.evaluate import evaluate_checkpoint as fn

        args = (cfg, checkpoint)
    console = _console()
    run_dir = _run(fn, *args, console, overrides, interrupt_hint="nothing was written")
    console.print(f"run dir: {run_dir}", soft_wrap=True)


@app.command()
def serve(
    checkpoint: Annotated[
        str | None, typer.Argument(help="a coordinator checkpoint (.pt) to serve")
    ] = None,
    overrides: Overrides = None,
    summarize: Annotated[
        str | None, typer.Option("--summarize", help="print the tables of a served RUN_DIR "
                                 "(per status; learning curve per model version, also as a PNG)")
    ] = None,
) -> None:
    """Serve a coordinator over HTTP to an application that owns the env loop."""
    console = _console()
    if summarize:
        from duo_cli.serve.curve import summarize_run

        _run(summarize_run, summarize, console)
        return
    if checkpoint is None:
        _fail("missing CHECKPOINT: duo serve CHECKPOINT [serve.port=PORT] [overrides]")
    cfg = _compose(overrides)
    from duo_cli.serve import server

    run_dir = _run(server.run, cfg, checkpoint, overrides, console,
                   interrupt_hint="live episodes were logged as interrupted")
    console.print(f"run dir: {run_dir}", soft_wrap=True)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sweep(
    overrides: Overrides = None,
    summarize: Annotated[
        str | None, typer.Option("--summarize", help="re-render the summary of an existing sweep dir")
    ] = None,
) -> None:
    """Hydra multirun cost sweep (alpha grid x methods x seeds) with AUC tables and plots."""
    from duo_cli import sweep as sweep_mod

    console = _console()
    if summarize:
        sweep_dir = _run(sweep_mod.summarize_dir, summarize, console)
    else:
        sweep_dir = _run(sweep_mod.run_sweep, list(overrides or []), console,
                         interrupt_hint="re-run with the same hydra.sweep.dir and sweep.resume=true")
    console.print(f"sweep dir: {sweep_dir}", soft_wrap=True)


@app.command()
def config(
    overrides: Overrides = None,
    type_: Annotated[
        str, typer.Option("--type", "-t", help="which primary config: agent | coord")
    ] = "agent",
) -> None:
    """Print the composed config as YAML."""
    from duo_cli.config import to_yaml

    cfg = _compose(overrides, type_)
    typer.echo(to_yaml(cfg), nl=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hydra").setLevel(logging.WARNING)
    app(prog_name="duo")


if __name__ == "__main__":
    sys.exit(main())
