"""A server's Prometheus series, read with ``prometheus_client``'s own text parser.

Each sample is keyed as the exposition writes it: ``name{label="value",...}``
with the labels in name order (as ``prometheus_client`` renders them), e.g.
``niyama_slo_met_total{tier="interactive"}`` or ``tgi_queue_size``.

One quirk of the parser is undone: for a counter declared without the
``_total`` suffix (TGI's ``tgi_request_count``, ``tgi_request_failure``...)
it names the samples ``<name>_total``, a series the server never wrote; here
they keep the name the server wrote.

``histogram`` reads one histogram of an exposition: its cumulative buckets
by upper bound ``le``, its sum and its count, over the label sets asked for.
"""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

_BARE_COUNTER = re.compile(r"^# TYPE (\S+) counter\s*$", re.MULTILINE)


def series_name(name: str, labels: Mapping[str, str]) -> str:
    """``name{label="value",...}``, labels sorted by name and escaped as in the text format."""
    if not labels:
        return name
    escaped = (f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return f"{name}{{{','.join(escaped)}}}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def parse(text: str) -> dict[str, float]:
    """Every sample of a text exposition: {series name with labels: value}."""
    declared = set(_BARE_COUNTER.findall(text))
    series: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        renamed = family.type == "counter" and family.name in declared
        for sample in family.samples:
            name = family.name if renamed and sample.name == family.name + "_total" else sample.name
            series[series_name(name, sample.labels)] = sample.value
    return series


def exposition(url: str, timeout: float = 30.0) -> str:
    """``url``/metrics as text; raises ``OSError`` (``urllib.error.URLError``) when the server does not answer."""
    with urllib.request.urlopen(url + "/metrics", timeout=timeout) as answer:
        return answer.read().decode()


def scrape(url: str, timeout: float = 30.0) -> dict[str, float]:
    """``url``/metrics, parsed; raises ``OSError`` (``urllib.error.URLError``) when the server does not answer."""
    return parse(exposition(url, timeout))


class HistogramSeries(NamedTuple):
    buckets: dict[float, float]  # upper bound ``le`` -> cumulative count, in increasing ``le``
    sum: float
    count: float


def histogram(text: str, name: str, **match: str) -> HistogramSeries | None:
    """The histogram ``name`` of a text exposition, summed over its label sets that carry ``match``.

    None when no bucket of ``name`` carries ``match``.
    """
    buckets: dict[float, float] = defaultdict(float)
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(key) != wanted for key, wanted in match.items()):
                continue
            if sample.name == name + "_bucket":
                buckets[float(sample.labels["le"])] += sample.value
            elif sample.name == name + "_sum":
                total += sample.value
            elif sample.name == name + "_count":
                count += sample.value
    return HistogramSeries(dict(sorted(buckets.items())), total, count) if buckets else None
