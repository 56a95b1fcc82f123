"""Pictures of a scenario run (matplotlib, Agg backend): faults injected, cars online and command outcomes on
one clock axis, built from the run's event stream; and an HTML report that shows the picture above the text."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tcu_sim.events import CarConnection, CommandChanged, Event, FaultChanged, Source

from ._report import ScenarioReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["report_html", "timeline_png"]

_OUTCOME_COLOURS = {"succeeded": "tab:green", "failed": "tab:orange", "rejected": "tab:red", "timed_out": "tab:gray"}


def timeline_png(events: Sequence[Event], *, title: str = "", cars: int | None = None) -> bytes:
    """A PNG: faults (one bar per target and fault while active), cars online (as the fleet saw them) and each
    command's final state, against clock seconds since the first event."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    t0 = min((e.at for e in events), default=0.0)
    figure, (faults_ax, online_ax, commands_ax) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 6.5), gridspec_kw={"height_ratios": [2, 2, 1.2]}
    )
    _faults(faults_ax, events, t0)
    _online(online_ax, events, t0, cars)
    _commands(commands_ax, events, t0)
    commands_ax.set_xlabel("clock seconds since the start")
    figure.suptitle(title or "scenario timeline")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
    return out.getvalue()


def _faults(ax: Axes, events: Iterable[Event], t0: float) -> None:
    bars: dict[str, list[tuple[float, float]]] = {}
    started: dict[str, float] = {}
    end = t0
    for event in events:
        end = max(end, event.at)
        if not isinstance(event, FaultChanged):
            continue
        key = f"{event.target}: {event.fault}"
        if event.active:
            started.setdefault(key, event.at)
        elif key in started:
            since = started.pop(key)
            bars.setdefault(key, []).append((since - t0, event.at - since))
    for key, since in started.items():  # still active at the end
        bars.setdefault(key, []).append((since - t0, end - since))
    labels = sorted(bars)
    for row, key in enumerate(labels):
        ax.broken_barh([(s, max(w, 0.5)) for s, w in bars[key]], (row - 0.4, 0.8), color="tab:red", alpha=0.6)
    ax.set_yticks(range(len(labels)), labels=labels, fontsize=7)
    ax.set_ylabel("faults")
    if not labels:
        ax.text(0.5, 0.5, "no fault injected", ha="center", va="center", transform=ax.transAxes)


def _online(ax: Axes, events: Iterable[Event], t0: float, cars: int | None) -> None:
    online: set[str] = set()
    xs, ys = [0.0], [0]
    for event in events:
        if isinstance(event, CarConnection) and event.source is Source.FLEET:
            if event.online:
                online.add(event.vin)
            else:
                online.discard(event.vin)
            xs.append(event.at - t0)
            ys.append(len(online))
    ax.step(xs, ys, where="post", color="tab:blue")
    if cars is not None:
        ax.axhline(cars, color="tab:blue", linestyle=":", linewidth=0.8)
    ax.set_ylabel("cars online")


def _commands(ax: Axes, events: Iterable[Event], t0: float) -> None:
    shown: set[str] = set()
    for event in events:
        if isinstance(event, CommandChanged) and event.state in _OUTCOME_COLOURS:
            label = event.state if event.state not in shown else None
            shown.add(event.state)
            colour = _OUTCOME_COLOURS[event.state]
            ax.scatter([event.at - t0], [event.op], color=colour, label=label, zorder=3)
    ax.set_ylabel("commands")
    if shown:
        ax.legend(loc="upper right", fontsize=7)


def report_html(report: ScenarioReport, png: bytes) -> str:
    """One self-contained HTML page: the verdict, the timeline picture (inline) and the text report."""
    verdict = "PASSED" if report.passed else "FAILED"
    image = base64.b64encode(png).decode("ascii")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>scenario {html.escape(report.name)}: {verdict}</title></head>\n<body>\n"
        f"<h1>scenario {html.escape(report.name)}: {verdict}</h1>\n"
        f"<img alt=\"timeline of faults, cars online and command outcomes\" src=\"data:image/png;base64,{image}\">\n"
        f"<pre>{html.escape(report.text())}</pre>\n</body></html>\n"
    )
