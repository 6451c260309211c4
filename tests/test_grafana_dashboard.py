"""The Grafana dashboard in examples/grafana/ asks only for series a live server's /metrics serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from harden_support import settled, wait_until
from prometheus_client.parser import text_string_to_metric_families
from router_server import tiny_server

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "niyama_dashboard.json"
KEYWORDS = {"and", "or", "unless", "bool", "offset"}
# What the dashboard is for: each of these must be charted (by its family name).
REQUIRED = (
    "niyama_slo_attainment", "niyama_slo_misses_total", "niyama_slo_judged_total", "niyama_tier_rejected_total",
    "niyama_ttft_seconds_bucket", "niyama_tbt_seconds_bucket", "niyama_ttlt_seconds_bucket", "niyama_queue_depth",
    "niyama_running", "niyama_relegations_total", "niyama_preemptions_total", "niyama_kv_blocks_free",
    "niyama_predictor_error", "niyama_event_loop_lag_seconds_bucket", "niyama_schedule_seconds_bucket",
)  # fmt: skip


def series_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: identifiers that are not functions, labels, keywords or ranges."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, $tier)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, range and subquery windows
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    found = re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr)
    return {m.group(1) for m in found if m.group(2) is None and m.group(1) not in KEYWORDS}


def dashboard_queries() -> tuple[list[tuple[str, str]], list[str]]:
    """(panel title, expression) of every query, and the series the template variables read."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    variables = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            variables += re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,", variable["definition"])
    return queries, variables


def test_the_query_parser_finds_series_and_only_series():
    expr = 'histogram_quantile(0.99, sum by (tier, le) (rate(a_seconds_bucket{tier=~"$tier"}[$__rate_interval])))'
    assert series_names(expr) == {"a_seconds_bucket"}
    expr = "sum(rate(x_total[5m])) / sum without (kind) (y) and on (tier) z > 0.5"
    assert series_names(expr) == {"x_total", "y", "z"}


def test_every_query_of_the_dashboard_names_a_series_the_server_serves():
    queries, variables = dashboard_queries()
    with tiny_server() as server:
        answer = requests.post(server.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
        assert answer.status_code == 200, answer.text  # a request, so the per-tier histograms have samples
        wait_until(lambda: settled(server))
        text = requests.get(server.url + "/metrics", timeout=10).text
    served = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    asked = set(variables)
    for title, expr in queries:
        names = series_names(expr)
        assert names, (title, expr)
        assert names <= served, f"{title}: {sorted(names - served)} not served by /metrics"
        if any(name.startswith("niyama_") and f"{name}{{tier" in text for name in names):
            assert "$tier" in expr, f"{title}: a per-tier series without the $tier variable"
        asked |= names
    assert set(variables) <= served
    assert set(REQUIRED) <= asked, sorted(set(REQUIRED) - asked)
