"""`--http`: the cloud's HTTP app API and the web dashboard of `tcu-sim up`, on one server (docs/http-api.md).

The server binds to 127.0.0.1 unless told otherwise; another address needs an operator token, which the
dashboard's controls then demand. A busy default port is replaced by a free one (the printed URL says which).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any, Final

import click

from broker.http import HttpApi, is_loopback, serve_http
from tcu_sim.stack import LocalStack
from tcu_sim.web import Dashboard

__all__ = ["DEFAULT_HTTP_PORT", "HttpChoice", "http_choice", "http_options", "start_dashboard"]

DEFAULT_HTTP_PORT: Final = 8080


class HttpChoice:
    """Where `up` serves HTTP: `port` None means not at all."""

    def __init__(self, port: int | None, host: str, operator_token: str | None) -> None:
        self.port = port
        self.host = host
        self.operator_token = operator_token

    def __repr__(self) -> str:
        token = "set" if self.operator_token else "none"
        return f"HttpChoice(port={self.port}, host={self.host!r}, operator_token={token})"


def http_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The `--http PORT`, `--no-http`, `--http-host` and `--operator-token` options (see `http_choice`)."""

    func = click.option("--operator-token", default=None, envvar="TCU_SIM_OPERATOR_TOKEN", show_envvar=True,
                        help="Needed by the dashboard's controls; required with an --http-host beyond loopback.")(func)
    func = click.option("--http-host", default="127.0.0.1", show_default=True,
                        help="Address of the HTTP server (app API and dashboard).")(func)
    func = click.option("--no-http", is_flag=True, help="No HTTP app API and no dashboard.")(func)
    func = click.option("--http", "http_port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT,
                        show_default=True,
                        help="Port of the HTTP app API and the web dashboard (0: a free port).")(func)
    return func


def http_choice(http_port: int, no_http: bool, http_host: str, operator_token: str | None) -> HttpChoice:
    """The validated choice; a UsageError for an address beyond loopback without an operator token."""
    if no_http:
        return HttpChoice(None, http_host, operator_token)
    if not is_loopback(http_host) and not operator_token:
        raise click.UsageError(
            f"--http-host {http_host}: serving the dashboard beyond loopback needs --operator-token (or "
            "TCU_SIM_OPERATOR_TOKEN): its controls change the simulation"
        )
    return HttpChoice(http_port, http_host, operator_token)


async def start_dashboard(stack: LocalStack, choice: HttpChoice) -> str | None:
    """Serve the app API and the dashboard for as long as the stack runs (a task it owns); the URL, or None."""
    if choice.port is None:
        return None
    api = HttpApi(stack.cloud)
    dashboard = Dashboard(stack, api, operator_token=choice.operator_token)
    try:
        serving = serve_http(dashboard.app, choice.host, choice.port, name="web")
        server = await serving.__aenter__()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or choice.port != DEFAULT_HTTP_PORT:
            api.close()
            raise click.ClickException(f"--http {choice.host}:{choice.port}: {exc.strerror or exc}") from None
        serving = serve_http(dashboard.app, choice.host, 0, name="web")  # the default port is taken: any
        server = await serving.__aenter__()

    async def hold() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await serving.__aexit__(None, None, None)
            api.close()

    stack.spawn(hold(), name="web.http")
    return server.url
