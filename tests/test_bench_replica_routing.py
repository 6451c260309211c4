"""`niyama bench replica-routing` on a tiny plan: the tables say what the simulations found.

The committed results (docs/results/replica_routing.md) come from the same
functions with the default plan; here two replicas, one minute of arrivals.
"""

from __future__ import annotations

import json
import re

import pytest

from niyama.bench.replica_routing import ROUTINGS, Plan, as_json, measure, report, violations_task

PLAN = Plan(replicas=2, duration=60.0, loads={"Poisson": (4.0,)}, sizing_loads={"Poisson": 20.0})


@pytest.fixture(scope="module")
def measured():
    results = measure(PLAN, jobs=1)
    return results, report(PLAN, results)


def rows(lines: list[str], first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith(f"| {first_cell} |")]


def test_each_routing_has_a_row_at_each_load_and_round_robin_shares_evenly(measured):
    results, lines = measured
    table = rows(lines, "Poisson")[: len(ROUTINGS)]
    assert [(row[1], row[2]) for row in table] == [("4", r) for r in ROUTINGS]
    for row, routing in zip(table, ROUTINGS):
        summary = results.runs[("Poisson", 4.0, routing)]
        shares = [int(share) for share in row[-1].split(",")]
        assert len(shares) == PLAN.replicas
        assert sum(shares) == sum(tier["count"] for tier in summary["tiers"].values())
        assert row[3] == f"{summary['violation_pct']:.2f}%"
    round_robin = [int(share) for share in table[0][-1].split(",")]
    assert max(round_robin) - min(round_robin) <= 1


def test_replicas_needed_is_the_fewest_that_keep_misses_within_one_percent(measured):
    results, lines = measured
    assert rows(lines, "Poisson")[len(ROUTINGS)][1:] == ["20"] + [str(results.sizing[("Poisson", r)]) for r in ROUTINGS]
    for routing in ROUTINGS:
        needed = results.sizing[("Poisson", routing)]
        assert needed >= 2  # 20 req/s is beyond one replica
        enough = violations_task(routing, needed, 20.0, True, PLAN.duration)
        fewer = violations_task(routing, needed - 1, 20.0, True, PLAN.duration)
        assert enough["violation_pct"] <= 1.0 < fewer["violation_pct"]


def test_json_has_the_tables_figures(measured):
    results, lines = measured
    data = json.loads(json.dumps(as_json(PLAN, results)))
    assert [(run["routing"], run["violation_pct"]) for run in data["runs"]] == [
        (r, results.runs[("Poisson", 4.0, r)]["violation_pct"]) for r in ROUTINGS
    ]
    assert {(s["routing"], s["replicas"]) for s in data["replicas_needed"]} == {
        (r, results.sizing[("Poisson", r)]) for r in ROUTINGS
    }
    assert data["plan"]["replicas"] == 2
    assert re.search(r"`niyama bench replica-routing .*`", "\n".join(lines))
