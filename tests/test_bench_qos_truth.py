"""`niyama bench qos-truth`: ratios are taken per seed, and the report says the lowest one."""

from __future__ import annotations

from niyama.bench import qos_truth


def test_ratios_are_per_seed_and_the_lowest_is_reported():
    goodputs = {"fcfs": [2.0, 4.0, 3.0], "edf": [8.0, 5.0, 10.0], "niyama": [12.0, 10.0, 11.0]}
    results = {truth: goodputs for truth in qos_truth.TRUTHS}
    assert qos_truth.ratios(goodputs, "edf") == [1.5, 2.0, 1.1]
    lines = qos_truth.report(results, [0, 1, 2], 600.0, "cmd")
    row = next(line for line in lines if line.startswith("| 0.3 | 1 |"))
    assert "| 11.00 (10.00–12.00) |" in row and "| 1.50x (1.10–2.00) |" in row  # median of the per-seed ratios
    assert "niyama/edf 1.10x" in "\n".join(lines)


def test_one_search_runs_on_a_noisy_biased_device():
    rate, probes = qos_truth.goodput_task("fcfs", 0.3, 1.25, 0, 30.0)
    assert rate > 0 and probes >= 2
