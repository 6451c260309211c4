"""The report of `niyama bench emulated`: 1%-miss crossing rates, real vs simulated tables, router figures, plots.

A policy's *crossing rate* is where its share of missed requests crosses 1%,
interpolated linearly between the two probed rates that bracket it (the
first pair, in rate order, at or under 1% and then over it). When no pair
brackets it the crossing is only bounded: above the highest rate probed
(every probe within 1%) or below the lowest (every probe over 1%), and the
report says so instead of making up a figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from niyama.qos.config import TierConfig  # noqa: E402

from .report import _table as markdown  # noqa: E402

MISS_PCT = 1.0  # the goodput bar: at most 1% of requests miss
MAX_GAP_PP = 2.0  # acceptance: simulated and real miss rates within 2 percentage points per tier
RATIOS = (("niyama", "fcfs", 1.5), ("niyama", "edf", 1.2))  # acceptance: niyama's crossing over each baseline's


def crossing(points: Sequence[tuple[float, float]]) -> dict:
    """Where (rate, miss %) points cross ``MISS_PCT``: ``rate``, and ``bound`` None (bracketed), "above" or "below".

    "above": every probe within 1%, so the crossing is above the highest rate (``rate`` is that rate);
    "below": every probe over 1% (``rate`` is the lowest). ``rate`` None: the misses go down and up again
    without a bracketing pair.
    """
    ordered = sorted(points)
    for (low, low_pct), (high, high_pct) in zip(ordered, ordered[1:]):
        if low_pct <= MISS_PCT < high_pct:
            return {"rate": low + (MISS_PCT - low_pct) * (high - low) / (high_pct - low_pct), "bound": None}
    if all(pct <= MISS_PCT for _, pct in ordered):
        return {"rate": ordered[-1][0], "bound": "above"}
    if all(pct > MISS_PCT for _, pct in ordered):
        return {"rate": ordered[0][0], "bound": "below"}
    return {"rate": None, "bound": "not monotone"}


def crossing_text(found: dict) -> str:
    if found["rate"] is None:
        return f"- ({found['bound']})"
    prefix = {None: "", "above": "> ", "below": "< "}[found["bound"]]
    return f"{prefix}{found['rate']:.2f}"


def interval(found: dict) -> tuple[float, float] | None:
    """The rates a crossing may be at: one rate when bracketed, else what the bound leaves open."""
    if found["rate"] is None:
        return None
    return {None: (found["rate"], found["rate"]), "above": (found["rate"], math.inf), "below": (0.0, found["rate"])}[
        found["bound"]
    ]


def ratio(top: dict, base: dict) -> dict:
    """``top``'s crossing over ``base``'s: ``value`` and ``bound`` None (exact), ">" or "<" (only a bound)."""
    a, b = interval(top), interval(base)
    if a is None or b is None:
        return {"value": None, "bound": None}
    low = a[0] / b[1]
    high = a[1] / b[0] if b[0] > 0 else math.inf
    if low == high:
        return {"value": low, "bound": None}
    if high == math.inf and low > 0:
        return {"value": low, "bound": ">"}
    if low == 0 and high < math.inf:
        return {"value": high, "bound": "<"}
    return {"value": None, "bound": None}


def points(results: dict, policy: str, side: str) -> list[tuple[float, float]]:
    return [(s["probes"][policy]["rate"], s["probes"][policy][side]["violation_pct"]) for s in results["steps"]]


def analyse(results: dict) -> dict:
    """Crossing rates (real and simulated) per policy and the acceptance ratios; stored into results.json too."""
    policies = list(results["rates"])
    found = {p: {side: crossing(points(results, p, side)) for side in ("real", "sim")} for p in policies}
    ratios = {
        f"{top}/{base}": {side: ratio(found[top][side], found[base][side]) for side in ("real", "sim")} | {"target": t}
        for top, base, t in RATIOS
        if top in found and base in found
    }
    return {"crossing": found, "ratios": ratios}


def tier_rows(results: dict) -> list[list]:
    """One row per (policy, rate, tier): real and simulated misses, their gap, within 2 points or not."""
    rows = []
    for step in results["steps"]:
        for policy, probe in step["probes"].items():
            for tier, real in probe["real"]["tiers"].items():
                sim = probe["sim"]["tiers"].get(tier, {})
                gap = real["violation_pct"] - sim.get("violation_pct", 0.0)
                rows.append([policy, f"{probe['rate']:.3f}", tier, real["requests"], real["misses"],
                             real.get("rejected"), real["failed"], f"{real['violation_pct']:.2f}",
                             sim.get("count"), sim.get("misses"), f"{sim.get('violation_pct', 0.0):.2f}",
                             f"{gap:+.2f}", "yes" if abs(gap) <= MAX_GAP_PP else "NO"])  # fmt: skip
    return rows


def router_row(label: str, rate: str, router: dict, sim_steps: int | None, client: dict | None) -> list:
    return [label, rate, router["peak_streams"], router["loop_lag_p99_ms"], router["schedule_p99_ms"],
            router["schedule_samples"], sim_steps, router.get("mean_step_ms"), router["tokens_per_s"],
            router["max_send_lag_s"], None if client is None else client["cpu_share"]]  # fmt: skip


def render(results: dict, tiers: TierConfig) -> list[str]:
    config, analysis = results["config"], results["analysis"]
    lines = ["# QoS end to end on an emulated device", "", f"Command: `{config['command']}`", "",
             *(["**Partial: the run has not finished; these are the steps done so far.**", ""]
               if results.get("partial") else []),
             f"Device `{config['emulate']}` (emulated: each step sleeps the latency model's time x lognormal noise "
             f"sigma {config['truth_noise']}, bias {config['truth_bias']}; tokens are fillers), trace "
             f"`{config['trace']}` at full length, Poisson arrivals, {config['duration']:g} s of arrivals per probe, "
             f"tiers `{config['tiers']}` ({tier_targets(tiers)}), "
             f"mix {', '.join(f'{m:.3f}' for m in config['mix'])}, seed {config['seed']}. "
             f"Wall time {config['wall_seconds'] / 60:.1f} min on {config['cpu_count']} CPUs.", "",
             "## Rate at 1% misses", "",
             "Interpolated between the probes that bracket it; `>`: every probe was within 1% (not bracketed), "
             "`<`: every probe was over 1%.", ""]  # fmt: skip
    rows = [[p, f"{results['goodput'][p]['rps']:.3f} ({results['goodput'][p]['source']})",
             ", ".join(f"{r:.3f}" for r in results["rates"][p]), crossing_text(c["real"]), crossing_text(c["sim"])]
            for p, c in analysis["crossing"].items()]  # fmt: skip
    lines += markdown(["policy", "goodput used (req/s)", "probed rates", "real 1% crossing", "sim 1% crossing"], rows)
    rows = [[name, f"{r['target']:g}x", ratio_text(r["real"]), ratio_text(r["sim"])]
            for name, r in analysis["ratios"].items()]  # fmt: skip
    if rows:
        lines += ["", *markdown(["ratio", "target", "real", "sim"], rows)]
    lines += ["", "## Misses per tier, real vs simulated", "",
              f"The simulator replays each probe's requests (same arrivals, lengths, tiers, truth noise, seed). "
              f"`within`: |real - sim| <= {MAX_GAP_PP:g} percentage points. Real misses include rejected "
              f"(429/503) and failed requests.", ""]  # fmt: skip
    headers = ["policy", "rate", "tier", "real req", "real miss", "rejected", "failed", "real miss %", "sim req",
               "sim miss", "sim miss %", "real - sim (pp)", "within"]  # fmt: skip
    lines += markdown(headers, tier_rows(results))
    lines += ["", "## Router figures", "",
              "Peak streams: most requests open at once at the client (send to last token). Loop lag and "
              "schedule time: p99 of the server's `niyama_event_loop_lag_seconds` and `niyama_schedule_seconds` "
              "over the probe (difference of scrapes, Prometheus' interpolation within a bucket). Tokens/s: "
              "streamed tokens over the probe's wall time. Steps: the server's, beside the simulator's for the same "
              "requests; mean step: the worker's own time per step (`tgi_batch_forward_duration`). Send lag: the "
              "client's worst lateness; client CPU share (stress probe): see below.", ""]  # fmt: skip
    rows = [router_row(p, f"{probe['rate']:.3f}", probe["router"], probe["sim"].get("steps"), None)
            for s in results["steps"] for p, probe in s["probes"].items()]  # fmt: skip
    if results.get("stress"):
        stress = results["stress"]
        rows.append(router_row(f"stress ({stress['policy']}: {stress['requests']} x {stress['output_tokens']} "
                               f"tokens in {stress['window_s']:g} s)", "-", stress["router"], None,
                               stress.get("client")))  # fmt: skip
    headers = ["probe", "rate", "peak streams", "loop lag p99 (ms)", "schedule p99 (ms)", "steps", "sim steps",
               "mean step (ms)", "tokens/s", "send lag (s)", "client CPU share"]  # fmt: skip
    lines += markdown(headers, rows)
    lines += ["", "## How it ran", "",
              f"{config['client']}; the servers side by side, one rate step at a time. Client CPU share: its "
              "process's CPU time over the step's wall time (near 1.0 would mean the client could be the "
              "bottleneck).", ""]  # fmt: skip
    rows = [[f"x{s['factor']:g}", s["client"]["wall_s"], s["client"]["cpu_s"], s["client"]["cpu_share"],
             " ".join(map(str, s["client"]["load_average"]))] for s in results["steps"]]  # fmt: skip
    lines += markdown(["step", "wall (s)", "client CPU (s)", "client CPU share", "load average"], rows)
    return lines


def tier_targets(tiers: TierConfig) -> str:
    return ", ".join(
        f"{t.name} {t.targets.primary.upper()} {getattr(t.targets, t.targets.primary):g} s" for t in tiers.tiers
    )


def ratio_text(found: dict) -> str:
    if found["value"] is None:
        return "-"
    return f"{'' if found['bound'] is None else found['bound'] + ' '}{found['value']:.2f}x"


def plot(results: dict, tiers: TierConfig, path: Path) -> None:
    """Miss % against rate, one panel per policy: real (solid) and simulated (dashed), overall and per tier."""
    policies = list(results["rates"])
    figure, axes = plt.subplots(1, len(policies), figsize=(4.8 * len(policies), 4.0), squeeze=False)
    for axis, policy in zip(axes[0], policies):
        for color, tier in zip(("black", "C0", "C1", "C2", "C3", "C4"), [None, *tiers.names]):
            for side, style in (("real", "-"), ("sim", "--")):
                series = sorted(
                    (s["probes"][policy]["rate"], _pct(s["probes"][policy][side], tier, side)) for s in results["steps"]
                )
                axis.plot([r for r, _ in series], [v for _, v in series], linestyle=style, marker="o", color=color,
                          label=f"{tier or 'all'} {side}", markersize=3)  # fmt: skip
        axis.axhline(MISS_PCT, color="grey", linestyle=":", linewidth=1)
        axis.set_title(policy)
        axis.set_xlabel("request rate (req/s)")
        axis.set_ylabel("missed (%)")
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _pct(summary: dict, tier: str | None, side: str) -> float:
    if tier is None:
        return summary["violation_pct"]
    return summary["tiers"].get(tier, {}).get("violation_pct", math.nan)  # a tier without requests: no point


def write_report(results: dict, tiers: TierConfig, out: Path) -> None:
    """summary.md and misses_vs_rate.png into ``out``, from ``results`` with its ``analysis``."""
    (out / "summary.md").write_text("\n".join(render(results, tiers)) + "\n")
    plot(results, tiers, out / "misses_vs_rate.png")
