"""`--metrics PORT` of `tcu-sim fleet run`, `cloud run` and `up`: serve `/metrics` (tcu_sim.metrics) while running."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import click

from tcu_sim.events import EventStream
from tcu_sim.metrics import Metrics

__all__ = ["metrics_option", "serve_metrics"]

metrics_option = click.option(
    "--metrics",
    "metrics_port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: a free port, printed).",
)


@contextlib.asynccontextmanager
async def serve_metrics(
    port: int | None,
    events: EventStream,
    *,
    cloud: Callable[[], Any] | None = None,
    fleet: Callable[[], Mapping[str, Any]] | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[Metrics | None]:
    """Metrics of `events` (and the cloud's and fleet's counters) served on `port`; nothing when `port` is None."""
    if port is None:
        yield None
        return
    async with Metrics(events, cloud=cloud, fleet=fleet) as metrics:
        try:
            server = metrics.serve(port, host)
        except OSError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"metrics: {server.url}", err=True)
        yield metrics
