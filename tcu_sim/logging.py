"""Structured logging, configured once: JSON outside a terminal, a console renderer on one.

`merge_contextvars` comes first so that a task bound to a VIN (`bind_contextvars(vin=...)`) logs it everywhere.
Secrets never reach a log line: `redact_secrets` blanks any field whose name says it holds one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["SECRET_FIELDS", "configure_logging", "redact_secrets"]

SECRET_FIELDS = frozenset(
    {"password", "old_password", "new_password", "spin", "old_spin", "new_spin", "token", "private_key",
     "secret", "pairing_code", "code", "authorization"}
)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of every secret-named field with `***`."""
    for key in event_dict.keys() & SECRET_FIELDS:
        event_dict[key] = "***"
    return event_dict


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog and stdlib logging for the process. `json=None` picks by whether stderr is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    # Tracebacks on a terminal must not print local variables: they can hold passwords and S-PINs.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # Database drivers log SQL parameters at DEBUG (mail bodies with verification codes): never below INFO.
    for noisy in ("aiosqlite", "asyncpg"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level.upper())))
