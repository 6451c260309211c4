"""summary.md and plots of the QoS evaluation (``evaluate_qos``), from its results dict alone."""

from __future__ import annotations

import statistics
from pathlib import Path

from niyama.qos.config import TierConfig

from .plots import plot_attainment, plot_latency_cdfs
from .report import probes_table, tier_table


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a (0 req/s)"


def goodput_lines(goodput: dict) -> list[str]:
    lines = ["| system | goodput (req/s) | bracketed | probes |", "|---|---|---|---|"]
    for system, entry in goodput.items():
        lines.append(f"| {system} | {entry['rps']:.3f} | {'yes' if entry['bracketed'] else 'lower bound'} | "
                     f"{len(entry['probes'])} |")  # fmt: skip
    rps = {system: entry["rps"] for system, entry in goodput.items()}
    lines.append("")
    if "niyama" in rps:
        for other in ("fcfs", "edf"):
            if other in rps:
                lines.append(f"- niyama / {other}: {_ratio(rps['niyama'], rps[other])}")
        if "silo" in rps:
            lines.append(f"- shared (niyama, all cores) / siloed (one server per tier, cores split): "
                         f"{_ratio(rps['niyama'], rps['silo'])}")  # fmt: skip
    return lines


def flood_lines(flood: dict) -> list[str]:
    lines = ["| policy | interactive TTFT p50 | TTFT p99 | TBT p50 | TBT p99 | interactive misses | "
             "TBT-miss % | batch TTLT p99 | batch misses |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for system, run in flood.items():
        tiers = run["summary"]["tiers"]
        inter, batch = tiers.get("interactive", {}), tiers.get("batch", {})
        lines.append(
            f"| {system} | {inter['ttft']['p50']} | {inter['ttft']['p99']} | {inter['tbt']['p50']} | "
            f"{inter['tbt']['p99']} | {inter['misses']}/{inter['requests']} | {inter['tbt_violation_pct']} | "
            f"{batch.get('ttlt', {}).get('p99')} | {batch.get('misses')}/{batch.get('requests')} |"
        )
    return lines


def noise_lines(results: dict) -> list[str]:
    """How noisy the machine was: load average and mean step time across the probes, per system."""
    lines = ["| system | probes | load average (1 min) min-max | mean step s (median, min-max) | predictor error |",
             "|---|---|---|---|---|"]  # fmt: skip
    for system, entry in results["goodput"].items():
        servers = [p["server"] for p in entry["probes"]]
        loads = [s["load_average_1m"] for s in servers]
        steps = [s["mean_step_s"] for s in servers if s["mean_step_s"] is not None]
        errors = [s["predictor_error"] for s in servers]
        step_text = f"{statistics.median(steps):.3f} ({min(steps):.3f}-{max(steps):.3f})" if steps else "-"
        lines.append(f"| {system} | {len(servers)} | {min(loads):.2f}-{max(loads):.2f} | {step_text} | "
                     f"{max(errors):.2f} |" if loads else f"| {system} | 0 | - | - | - |")  # fmt: skip
    return lines


def write_report(results: dict, tiers: TierConfig, out: Path) -> None:
    config = results["config"]
    lines = ["# QoS evaluation: results", "", f"`{config['command']}`", "",
             f"Wall time: {config['wall_seconds'] / 60:.1f} min on {config['cpu_count']} cores.", "",
             "## Goodput (highest rate with at most 1% of requests missing their primary target)", ""]  # fmt: skip
    lines += goodput_lines(results["goodput"])
    lines += ["", "## Batch flood: the interactive tier while a burst of batch requests arrives", ""]
    lines += flood_lines(results["flood"])
    lines += ["", "## Noise", ""] + noise_lines(results)
    for system, entry in results["goodput"].items():
        lines += ["", f"## Probes: {system}", ""] + probes_table(entry["probes"])
        best = [p for p in entry["probes"] if p["ok"]]
        if best:
            top = max(best, key=lambda p: p["rate"])
            lines += ["", f"At its goodput ({top['rate']:.3f} req/s):", ""] + tier_table(top["summary"])
    for system, run in results["flood"].items():
        lines += ["", f"## Flood: {system}", ""] + tier_table(run["summary"])
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_attainment({s: e["probes"] for s, e in results["goodput"].items()}, out / "attainment_vs_rate.png",
                    "attainment against rate (goodput probes)")  # fmt: skip
    plot_latency_cdfs(list(results["flood"].values()), tiers, out / "flood_latency_cdf.png",
                      "batch flood: latency CDFs per policy")  # fmt: skip
    at_common = common_rate_runs(results["goodput"])
    if at_common:
        plot_latency_cdfs(at_common, tiers, out / "probe_latency_cdf.png",
                          f"latency CDFs at {at_common[0]['rate']:.3f} req/s")  # fmt: skip


def common_rate_runs(goodput: dict) -> list[dict]:
    """Each system's probe at the highest rate every system probed (same seed: the same requests)."""
    rates = [{round(p["rate"], 6) for p in entry["probes"]} for entry in goodput.values()]
    shared = set.intersection(*rates) if rates else set()
    if not shared:
        return []
    rate = max(shared)
    runs = []
    for system, entry in goodput.items():
        probe = next(p for p in entry["probes"] if round(p["rate"], 6) == rate)
        runs.append({**probe, "label": system})
    return runs
