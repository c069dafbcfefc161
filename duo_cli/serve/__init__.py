"""``duo serve``: a trained coordinator serving an application that owns the env loop.

Modules: :mod:`~duo_cli.serve.wire` (JSON and observations), :mod:`~duo_cli.serve.episodes`
(the episode state machine and its accounting), :mod:`~duo_cli.serve.batcher` (the
micro-batcher), :mod:`~duo_cli.serve.coordinator` (loading a checkpoint, the batched step),
:mod:`~duo_cli.serve.service` (the calls), :mod:`~duo_cli.serve.app` (HTTP),
:mod:`~duo_cli.serve.store` (the episode log) and :mod:`~duo_cli.serve.server` (running it);
reading the log: :mod:`~duo_cli.serve.curve` (``duo serve --summarize``),
:mod:`~duo_cli.serve.replay` and :mod:`~duo_cli.serve.offpolicy` (``duo eval --from-log``).
The client is :mod:`duo_cli.client`.
"""
