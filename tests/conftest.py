"""Suite-wide fixtures of the tcu-sim repository's own tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _isolated_logging_configuration() -> Iterator[None]:
    """CLI tests run `tcu-sim` in-process, which configures logging for the whole process (level, renderer).
    Put structlog and the stdlib levels back after every test, so that a later test that captures log lines sees
    the defaults and not, say, a WARNING level left by an earlier `--log-level WARNING`."""
    levels = {name: logging.getLogger(name).level for name in ("", "aiosqlite", "asyncpg")}
    yield
    structlog.reset_defaults()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
