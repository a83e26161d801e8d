"""The `streams` command: argv, logging and exit codes; everything else is library code.

Errors streams raises on purpose print as one line (with --debug, the traceback too).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from streams.config import load_settings
from streams.errors import StreamsError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
broker_app = typer.Typer(no_args_is_help=True, help="The local Apache Kafka broker.")
app.add_typer(broker_app, name="broker")

_debug = False
T = TypeVar("T")


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    global _debug
    _debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except StreamsError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


@broker_app.command("start")
def broker_start(
    port: Annotated[int | None, typer.Option(help="Listener port (default: a free one).")] = None,
    refresh: Annotated[bool, typer.Option(help="Fetch the Kafka jars again.")] = False,
) -> None:
    """Start the local broker (or reuse the running one) and print its bootstrap address."""
    from streams.kafka.local_broker import LocalBroker

    settings = load_settings()
    if settings.bootstrap_servers:
        typer.echo(f"KAFKA_BOOTSTRAP_SERVERS is set; using {settings.bootstrap_servers}")
        return
    state, reused = _run(lambda: LocalBroker(settings).start(port=port, refresh=refresh))
    verb = "running" if reused else "started"
    typer.echo(f"Kafka {state.kafka_version} {verb} (pid {state.pid}) at {state.bootstrap}")
    typer.echo(state.bootstrap)


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker."""
    from streams.kafka.local_broker import LocalBroker

    stopped = _run(lambda: LocalBroker(load_settings()).stop())
    typer.echo("stopped" if stopped else "no local broker was running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs, and where. Exit 1 when it does not."""
    from streams.kafka.local_broker import LocalBroker

    settings = load_settings()
    if settings.bootstrap_servers:
        typer.echo(f"using the cluster at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        return
    state = _run(lambda: LocalBroker(settings).status())
    if state is None:
        typer.echo("not running")
        raise typer.Exit(code=1)
    typer.echo(f"running: Kafka {state.kafka_version}, pid {state.pid}, {state.bootstrap}")


@app.command("demo")
def demo(
    events: Annotated[int, typer.Option(help="Task events to publish.")] = 2000,
    workdir: Annotated[Path, typer.Option(help="Where reports go.")] = Path("runs"),
) -> None:
    """Run the demo workflow on the local broker and print what happened."""
    from streams.demo.quick import run_quick_demo

    result = _run(lambda: run_quick_demo(load_settings(), events=events))
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(code=1)


def main() -> None:
    app()
