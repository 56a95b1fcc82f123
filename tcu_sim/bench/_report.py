"""The benchmark's figures: each with its unit, the SPEC §6 target and the baseline beside it, and whether the
target is met.

A `Figure` that could not be measured keeps `value=None` and says why in `note`; the table prints it as
"not measured" and the JSON keeps it, so a run never pretends to a number it does not have.

The JSON lists every figure with its label, target and note (`sizes[].figures`), and also holds the values alone
under stable keys (`values`: per fleet size as text, e.g. `values["1000"]["P2.p99"]`, and
`values["shared"]["P3.rate"]`), so that scripts comparing runs need not search the lists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BASELINE",
    "BASELINES",
    "STABLE_KEYS",
    "BenchReport",
    "Figure",
    "SizeReport",
    "at_least",
    "at_most",
    "baseline_for",
    "percentile",
    "render_table",
]

#: The naive baseline of SPEC §6 (one plain aiomqtt client per car, no TLS, no signing), for comparison.
BASELINE: dict[str, str] = {
    "cpu": "0.76 core @10k",
    "rtt": "p50 44 ms, p99 1.3 s @10k (p50 1.5 ms @1k with TCP_NODELAY)",
}


#: The figures of issue 11 before its work (2026-12-05, idle 2-core machine, `python -m tcu_sim.bench --sizes
#: 1000,10000`), printed beside each run's: by figure key, and fleet size (0: independent of the size).
BASELINES: dict[tuple[str, int], str] = {
    ("P2.p50", 1000): "102 ms",
    ("P2.p99", 1000): "214 ms",
    ("P2.p99", 10000): "311 ms",
    ("P1.rtt.p50", 10000): "3.1 ms",
    ("P1.rtt.p99", 10000): "322 ms",
    ("P2.cloud_cpu_ms_per_command", 1000): "13 ms",
    ("P2.cloud_cpu_ms_per_command", 10000): "13 ms",
    ("P3.rate", 0): "3,359 msg/s",
    ("P3.cpu_rate", 0): "3,232 msg/s",
    ("P1.rss_car", 10000): "62 KiB",
    ("P4.storm.cpu_fleet", 10000): "3.5 ms",
}

#: The keys the JSON's `values` always has (None when not measured), whatever else a run adds.
STABLE_KEYS: dict[str, tuple[str, ...]] = {
    "size": ("P1.rss_car", "P2.p50", "P2.p99", "P2.cloud_cpu_ms_per_command"),
    "shared": ("P3.rate", "P3.cpu_rate"),
}


def baseline_for(key: str, cars: int) -> str:
    """The baseline of a figure at a fleet size (0: a size-independent figure), or ""."""
    return BASELINES.get((key, cars), "")


@dataclass(slots=True)
class Figure:
    """One measured figure. `met` is None when there is no target or no value."""

    key: str
    label: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    baseline: str = ""

    def shown(self) -> str:
        """The value as the table prints it."""
        if self.value is None:
            return "not measured"
        if self.unit in ("cars", "msgs", "count", "attempts", "commands"):
            return f"{self.value:,.0f}"
        if self.unit == "msg/s" or self.unit == "cars/s":
            return f"{self.value:,.0f} {self.unit}"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}"
        if abs(self.value) >= 10:
            return f"{self.value:.1f} {self.unit}"
        return f"{self.value:.3g} {self.unit}"

    def verdict(self) -> str:
        """"met", "MISSED" or "" (no target, or nothing measured)."""
        if self.met is None:
            return ""
        return "met" if self.met else "MISSED"


def at_most(limit: float) -> Callable[[float], bool]:
    """A check that a value is at most `limit`."""
    return lambda value: value <= limit


def at_least(limit: float) -> Callable[[float], bool]:
    """A check that a value is at least `limit`."""
    return lambda value: value >= limit


@dataclass(slots=True)
class SizeReport:
    """Every figure measured for one fleet size, in the order they were taken."""

    cars: int
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        key: str,
        label: str,
        value: float | None,
        unit: str,
        *,
        target: str = "",
        check: Callable[[float], bool] | None = None,
        note: str = "",
    ) -> Figure:
        """Record a figure (replacing one with the same key); `check` decides `met` when there is a value."""
        met = None if value is None or check is None or math.isnan(value) else bool(check(value))
        figure = Figure(key, label, value, unit, target, met, note, baseline_for(key, self.cars))
        self.figures = [f for f in self.figures if f.key != key] + [figure]
        return figure

    def missing(self, key: str, label: str, unit: str, why: str, *, target: str = "") -> Figure:
        """Record a figure that could not be measured, and why."""
        return self.add(key, label, None, unit, target=target, note=why)

    def get(self, key: str) -> Figure | None:
        """The figure recorded under `key`."""
        return next((f for f in self.figures if f.key == key), None)

    def value(self, key: str) -> float | None:
        """The value of the figure under `key` (None when absent or not measured)."""
        figure = self.get(key)
        return figure.value if figure is not None else None


@dataclass(slots=True)
class BenchReport:
    """A whole run: what ran where, and the figures per fleet size plus the size-independent ones."""

    started_at: str
    command: str
    machine: dict[str, Any] = field(default_factory=dict)
    sizes: list[SizeReport] = field(default_factory=list)
    shared: SizeReport = field(default_factory=lambda: SizeReport(cars=0))
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "started_at": self.started_at,
            "command": self.command,
            "machine": self.machine,
            "baseline": BASELINE,
            "sizes": [
                {"cars": s.cars, "figures": [asdict(f) for f in s.figures], "details": s.details} for s in self.sizes
            ],
            "shared": {"figures": [asdict(f) for f in self.shared.figures], "details": self.shared.details},
            "values": self.values(),
            "errors": self.errors,
        }

    def values(self) -> dict[str, dict[str, float | None]]:
        """Every figure's value by stable key: per fleet size (`"1000"`) and `"shared"`; the `STABLE_KEYS` are
        always there (None when not measured)."""
        out: dict[str, dict[str, float | None]] = {}
        for size in self.sizes:
            values: dict[str, float | None] = dict.fromkeys(STABLE_KEYS["size"])
            values.update({f.key: _finite(f.value) for f in size.figures})
            out[str(size.cars)] = values
        shared: dict[str, float | None] = dict.fromkeys(STABLE_KEYS["shared"])
        shared.update({f.key: _finite(f.value) for f in self.shared.figures})
        out["shared"] = shared
        return out

    def write_json(self, path: Path) -> None:
        """Save the figures as JSON."""
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (`pct` in 0..100) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _table(rows: Iterable[Sequence[str]], headers: Sequence[str]) -> list[str]:
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def render_table(report: BenchReport) -> str:
    """The human-readable report: one table per fleet size, then the size-independent figures."""
    out: list[str] = [f"tcu-sim bench, {report.started_at}", f"  {report.command}"]
    for key, value in report.machine.items():
        out.append(f"  {key}: {value}")
    headers = ("id", "figure", "value", "SPEC target", "verdict", "baseline", "note")
    for size in report.sizes:
        out += ["", f"== {size.cars:,} cars =="]
        out += _table(
            ((f.key, f.label, f.shown(), f.target, f.verdict(), f.baseline, f.note) for f in size.figures), headers
        )
    if report.shared.figures:
        out += ["", "== independent of fleet size =="]
        out += _table(
            ((f.key, f.label, f.shown(), f.target, f.verdict(), f.baseline, f.note) for f in report.shared.figures),
            headers,
        )
    out += ["", f"naive baseline (SPEC §6): {BASELINE['cpu']}; round trip {BASELINE['rtt']}",
            "baseline column: the figures before issue 11's work (2026-12-05, idle 2-core machine)"]
    for error in report.errors:
        out.append(f"error: {error}")
    return "\n".join(out)
