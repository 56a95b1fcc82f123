"""The open-files limit: every car holds a socket, so a large fleet needs more than the usual soft limit of 1024."""

from __future__ import annotations

import resource

__all__ = ["raise_open_files_limit"]


def raise_open_files_limit(wanted: int | None = None) -> tuple[int, int]:
    """Lift this process's soft RLIMIT_NOFILE to `wanted` (None: to the hard limit), never above the hard limit
    and never below where it is; child processes started afterwards (broker, cloud, fleet shards) inherit it.
    Returns (soft, hard) after the change.

    The stack and `tcu-sim fleet run` ask for one file per car plus 1024 to spare; the bench for all there is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
