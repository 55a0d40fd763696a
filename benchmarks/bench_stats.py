"""Summaries the benchmarks share (no engine or server needed to import it)."""

from __future__ import annotations

import statistics


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Request latencies (seconds) as n, p50/p90/p99, max and mean in milliseconds."""
    ms = sorted(x * 1000 for x in latencies)

    def q(p: float) -> float:
        return ms[min(len(ms) - 1, round(p * (len(ms) - 1)))]

    return {"n": len(ms), "p50_ms": round(q(0.50), 3), "p90_ms": round(q(0.90), 3),
            "p99_ms": round(q(0.99), 3), "max_ms": round(ms[-1], 3),
            "mean_ms": round(statistics.fmean(ms), 3)}
