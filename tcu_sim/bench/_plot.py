"""Pictures of a bench run (matplotlib, Agg backend), saved beside its JSON: how fast cars came online at start
(per fleet size) and after the broker restart (the reconnect storm), and the round-trip percentiles."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

__all__ = ["bench_png", "save_bench_plot"]

_STEP_S = 5.0  # the bench's curves count cars per 5 s (`OnlineObserver.curve`)


def bench_png(data: dict[str, Any]) -> bytes:
    """A PNG of the bench JSON `data` (`BenchReport.as_dict()`): connect curves, storm curves, round trips."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    figure, (connect_ax, storm_ax, rtt_ax) = plt.subplots(1, 3, figsize=(14, 4.2))
    sizes = data.get("sizes", [])
    for size in sizes:
        details = size.get("details", {})
        label = f"{size['cars']} cars"
        _cumulative(connect_ax, details.get("connect_curve_per_5s"), label)
        _cumulative(storm_ax, (details.get("storm") or {}).get("curve_per_5s"), label)
    connect_ax.set(title="start: cars online", xlabel="seconds", ylabel="cars")
    storm_ax.set(title="reconnect storm: cars back after the restart", xlabel="seconds", ylabel="cars")
    for ax in (connect_ax, storm_ax):
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    labels, p50, p99 = [], [], []
    for size in sizes:
        figures = {f["key"]: f.get("value") for f in size.get("figures", [])}
        for prefix, who in (("P1.rtt", "driver"), ("P2", "app")):
            if figures.get(f"{prefix}.p50") is not None:
                labels.append(f"{who}\n{size['cars']} cars")
                p50.append(figures[f"{prefix}.p50"])
                p99.append(figures.get(f"{prefix}.p99") or 0.0)
    positions = list(range(len(labels)))
    rtt_ax.bar([p - 0.2 for p in positions], p50, width=0.4, label="p50")
    rtt_ax.bar([p + 0.2 for p in positions], p99, width=0.4, label="p99")
    rtt_ax.set_xticks(positions, labels=labels, fontsize=8)
    rtt_ax.set(title="command round trip", ylabel="ms")
    if labels:
        rtt_ax.legend(fontsize=8)
    figure.suptitle(f"bench {data.get('started_at', '')}")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
    return out.getvalue()


def _cumulative(ax: Any, curve: list[int] | None, label: str) -> None:
    if not curve:
        return
    total, xs, ys = 0, [0.0], [0]
    for i, count in enumerate(curve):
        total += count
        xs.append((i + 1) * _STEP_S)
        ys.append(total)
    ax.step(xs, ys, where="post", label=label)


def save_bench_plot(json_path: Path, data: dict[str, Any]) -> Path:
    """Write the picture beside the bench JSON (`bench.json` → `bench.png`); its path."""
    out = json_path.with_suffix(".png")
    out.write_bytes(bench_png(data))
    return out
