"""PNG plots of bench results: latency CDFs against each tier's targets, and attainment against rate.

Both read the JSON-ready run dicts (``ProbeResult.to_json``), so the
evaluation can plot several servers' runs on one figure by giving each run
its own label. matplotlib runs headless (the Agg backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from niyama.qos.config import TierConfig  # noqa: E402


def latencies(run: dict, tier: str) -> dict[str, list[float]]:
    """TTFT, every gap between tokens (TBT) and TTLT of ``tier``'s completed requests in ``run``."""
    series: dict[str, list[float]] = {"ttft": [], "tbt": [], "ttlt": []}
    for record in run["records"]:
        times = record["token_s"]
        if record["tier"] != tier or record["error"] is not None or not times:
            continue
        series["ttft"].append(times[0])
        series["ttlt"].append(times[-1])
        series["tbt"].extend(b - a for a, b in zip(times, times[1:]))
    return series


def _panels(tiers: TierConfig) -> list[tuple[str, str, float | None]]:
    """(tier, metric, target) for each CDF panel: TTFT and TBT of interactive tiers, TTLT of batch ones."""
    panels = []
    for tier in tiers.tiers:
        metrics = ("ttft", "tbt") if tier.interactive else ("ttlt",)
        panels += [(tier.name, metric, getattr(tier.targets, metric)) for metric in metrics]
    return panels


def plot_latency_cdfs(runs: Sequence[dict], tiers: TierConfig, path: Path, title: str = "") -> None:
    """One panel per (tier, objective); one line per run; a dashed line at the target."""
    panels = _panels(tiers)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for axis, (tier, metric, target) in zip(axes[0], panels):
        for run in runs:
            values = sorted(latencies(run, tier)[metric])
            if values:
                shares = [(i + 1) / len(values) for i in range(len(values))]
                axis.step(values, shares, where="post", label=run["label"])
        if target is not None:
            axis.axvline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g} s")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(f"{metric.upper()} (s)")
        axis.set_ylabel("share of requests" if metric != "tbt" else "share of token gaps")
        axis.set_title(f"{tier}: {metric.upper()}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_attainment(series: Mapping[str, Sequence[dict]], path: Path, title: str = "") -> None:
    """Attainment (% of requests meeting their tier's primary target) against rate, per system and tier.

    ``series`` maps a system's label to its runs; runs without a single rate
    (rate schedules) are skipped. The dotted line is the 99% goodput bar.
    """
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    for label, runs in series.items():
        points = sorted((r["rate"], r) for r in runs if r["rate"] is not None)
        if not points:
            continue
        rates = [rate for rate, _ in points]
        overall = [run["summary"]["attainment_pct"] for _, run in points]
        line = axis.plot(rates, overall, marker="o", label=f"{label}: all tiers")[0]
        tiers = sorted({name for _, run in points for name in run["summary"]["tiers"]})
        for style, tier in zip((":", "-.", (0, (1, 3))), tiers):
            values = [run["summary"]["tiers"].get(tier, {}).get("attainment_pct") for _, run in points]
            axis.plot(rates, values, linestyle=style, marker=".", color=line.get_color(), label=f"{label}: {tier}")
    axis.axhline(99, color="black", linestyle="--", linewidth=1, label="99% (goodput bar)")
    axis.set_xlabel("request rate (req/s)")
    axis.set_ylabel("attainment (%)")
    axis.set_ylim(0, 101)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
