"""The bench's picture (connect and storm curves, round-trip percentiles) from synthetic bench JSON: the bench
itself is never run by tests."""

from __future__ import annotations

from pathlib import Path

from tcu_sim.bench._plot import bench_png, save_bench_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic() -> dict[str, object]:
    figures = [
        {"key": "P1.rtt.p50", "value": 3.1}, {"key": "P1.rtt.p99", "value": 12.0},
        {"key": "P2.p50", "value": 16.0}, {"key": "P2.p99", "value": 40.5},
    ]
    return {
        "started_at": "2026-12-05T18:00:00Z",
        "sizes": [
            {"cars": 1000, "figures": figures,
             "details": {"connect_curve_per_5s": [400, 500, 100], "storm": {"curve_per_5s": [900, 100]}}},
            {"cars": 10000, "figures": [{"key": "P1.rtt.p50", "value": 9.0}],
             "details": {"connect_curve_per_5s": [2000] * 5}},
        ],
    }


def test_the_bench_picture_is_saved_beside_the_json(tmp_path: Path) -> None:
    json_path = tmp_path / "bench.json"
    out = save_bench_plot(json_path, synthetic())
    assert out == tmp_path / "bench.png"
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert out.stat().st_size > 10_000


def test_a_bench_without_curves_still_draws() -> None:
    assert bench_png({"sizes": []}).startswith(PNG_MAGIC)
