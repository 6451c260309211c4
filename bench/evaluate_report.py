"""summary.md and plots of the QoS evaluation (``evaluate_qos``), from its results dict alone.

Every comparison is stated as the median over the repeats with its range
(min-max): one run on a shared machine swings several-fold with its load.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from niyama.qos.config import TierConfig

from .plots import plot_attainment, plot_latency_cdfs
from .report import probes_table, tier_table


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``median (min-max, n runs)``; the median alone for a single run."""
    if not values:
        return "-"
    median = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return f"{median} (1 run)"
    return f"{median} ({min(values):.{digits}f}-{max(values):.{digits}f}, {len(values)} runs)"


def ratios(runs: Sequence[dict], a: str, b: str) -> list[float]:
    """``a``'s goodput over ``b``'s in each run where ``b`` passed some rate (same seed, same requests)."""
    return [run["goodput"][a]["rps"] / run["goodput"][b]["rps"] for run in runs
            if a in run["goodput"] and b in run["goodput"] and run["goodput"][b]["rps"]]  # fmt: skip


def goodput_lines(runs: Sequence[dict]) -> list[str]:
    lines = ["| system | goodput (req/s): median (min-max) | each run (seed: req/s) | bracketed in |",
             "|---|---|---|---|"]  # fmt: skip
    for system in runs[0]["goodput"]:
        entries = [(run["seed"], run["goodput"][system]) for run in runs]
        each = ", ".join(f"{seed}: {e['rps']:.3f}" for seed, e in entries)
        bracketed = sum(e["bracketed"] for _, e in entries)
        lines.append(f"| {system} | {spread([e['rps'] for _, e in entries])} | {each} | "
                     f"{bracketed}/{len(entries)} runs |")  # fmt: skip
    lines.append("")
    pairs = [("niyama", "fcfs", "niyama / fcfs"), ("niyama", "edf", "niyama / edf"),
             ("niyama", "silo", "shared (niyama, all cores) / siloed (one server per tier, cores split)")]  # fmt: skip
    for a, b, name in pairs:
        if b in runs[0]["goodput"]:
            found = ratios(runs, a, b)
            skipped = len(runs) - len(found)
            note = f"; {skipped} run(s) left out: {b} passed no rate" if skipped else ""
            lines.append(f"- {name}: {spread(found, 2)}, per run{note}")
    return lines


def flood_lines(runs: Sequence[dict]) -> list[str]:
    """Per policy over the repeats: the interactive tier's p99s (median, range) and misses summed."""
    lines = ["| policy | interactive TTFT p99 (s) | interactive TBT p99 (s) | interactive misses | "
             "batch TTLT p99 (s) | batch misses |", "|---|---|---|---|---|---|"]  # fmt: skip
    for policy in runs[0]["flood"]:
        tiers = [run["flood"][policy]["summary"]["tiers"] for run in runs]
        inter = [t.get("interactive", {}) for t in tiers]
        batch = [t.get("batch", {}) for t in tiers]

        def p99(entries: list[dict], metric: str) -> str:
            return spread([v for e in entries if (v := e.get(metric, {}).get("p99")) is not None], 2)

        def misses(entries: list[dict]) -> str:
            return f"{sum(e.get('misses', 0) for e in entries)}/{sum(e.get('requests', 0) for e in entries)}"

        lines.append(f"| {policy} | {p99(inter, 'ttft')} | {p99(inter, 'tbt')} | {misses(inter)} | "
                     f"{p99(batch, 'ttlt')} | {misses(batch)} |")  # fmt: skip
    return lines


def noise_lines(runs: Sequence[dict]) -> list[str]:
    """How noisy the machine was: load average and mean step time across every probe, per system."""
    lines = ["| system | probes | load average (1 min) min-max | mean step s (median, min-max) | predictor error |",
             "|---|---|---|---|---|"]  # fmt: skip
    for system in runs[0]["goodput"]:
        servers = [p["server"] for run in runs for p in run["goodput"][system]["probes"]]
        loads = [s["load_average_1m"] for s in servers]
        steps = [s["mean_step_s"] for s in servers if s["mean_step_s"] is not None]
        errors = [s["predictor_error"] for s in servers]
        step_text = f"{statistics.median(steps):.3f} ({min(steps):.3f}-{max(steps):.3f})" if steps else "-"
        lines.append(f"| {system} | {len(servers)} | {min(loads):.2f}-{max(loads):.2f} | {step_text} | "
                     f"{max(errors):.2f} |" if loads else f"| {system} | 0 | - | - | - |")  # fmt: skip
    return lines


def run_lines(run: dict) -> list[str]:
    """One repeat in full: every probe of every search, the tiers at each goodput, the floods."""
    lines = []
    for system, entry in run["goodput"].items():
        lines += ["", f"### Probes: {system}", ""] + probes_table(entry["probes"])
        passed = [p for p in entry["probes"] if p["ok"]]
        if passed:
            top = max(passed, key=lambda p: p["rate"])
            lines += ["", f"At its goodput ({top['rate']:.3f} req/s):", ""] + tier_table(top["summary"])
    for system, flood in run["flood"].items():
        lines += ["", f"### Flood: {system}", ""] + tier_table(flood["summary"])
    return lines


def write_report(results: dict, tiers: TierConfig, out: Path) -> None:
    config, runs = results["config"], results["runs"]
    lines = ["# QoS evaluation: results", "", f"`{config['command']}`", "",
             f"Wall time: {config['wall_seconds'] / 60:.1f} min on {config['cpu_count']} cores; "
             f"{len(runs)} runs (seeds {', '.join(str(r['seed']) for r in runs)}); every server with "
             f"{config.get('step_cap')}-token steps; probes of {config.get('duration')} s of arrivals.", "",
             "## Goodput (highest rate with at most 1% of requests missing their primary target)", ""]  # fmt: skip
    lines += goodput_lines(runs)
    lines += ["", "## Batch flood: the interactive tier while a burst of batch requests arrives", ""]
    lines += flood_lines(runs)
    lines += ["", "## Noise", ""] + noise_lines(runs)
    for run in runs:
        lines += ["", f"## Run with seed {run['seed']}"] + run_lines(run)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_attainment({f"{s} (seed {run['seed']})": e["probes"] for run in runs for s, e in run["goodput"].items()},
                    out / "attainment_vs_rate.png", "attainment against rate (goodput probes, every run)")  # fmt: skip
    first = runs[0]
    plot_latency_cdfs(list(first["flood"].values()), tiers, out / "flood_latency_cdf.png",
                      f"batch flood: latency CDFs per policy (seed {first['seed']})")  # fmt: skip
    at_common = common_rate_runs(first["goodput"])
    if at_common:
        plot_latency_cdfs(at_common, tiers, out / "probe_latency_cdf.png",
                          f"latency CDFs at {at_common[0]['rate']:.3f} req/s (seed {first['seed']})")  # fmt: skip


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
