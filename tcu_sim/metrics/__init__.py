"""Prometheus metrics of a running system (SPEC §8): `/metrics` of `tcu-sim fleet run|cloud run|up --metrics PORT`.

    async with Metrics(stack.events, cloud=lambda: stack.cloud.stats, fleet=lambda: stack.fleet.sessions) as m:
        m.serve(9464)                      # http://127.0.0.1:9464/metrics, in the OpenMetrics/Prometheus text format

Counters and histograms move with the event stream (`tcu_sim.events`): a task reads one bounded subscription;
what cloud and fleet only count (messages received by kind, batches, the stream's own drops) is read when
scraped. Labels are bounded (op names, states, reason codes; never a VIN, a client id or a free text), so 10,000
cars give the same number of series as one. The names are listed in `METRIC_NAMES` and in the README.
"""

from __future__ import annotations

from ._metrics import METRIC_NAMES, Metrics, MetricsServer

__all__ = ["METRIC_NAMES", "Metrics", "MetricsServer"]
