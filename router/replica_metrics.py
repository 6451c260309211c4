"""Per-replica series for /metrics, read from the engine's replica set at scrape time.

The app's `Metrics` hears every replica's steps and requests, so TGI's series
(`tgi_request_*`, `tgi_batch_*`, queue and batch gauges) are the sums over
replicas (one, without `--replicas`). Beside them, each replica has its own series labelled `replica` (the
slot index, stable across restarts): whether it serves, how often it was
restarted, its requests per tier and outcome (`cancelled`: its client left; `moved`: failed out of a lost
replica before their first token and served elsewhere), its steps, and its
scheduler's queue, running requests and free KV blocks.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from niyama.engine.replicas import ReplicaSet


class ReplicaCollector:
    def __init__(self, replicas: ReplicaSet) -> None:
        self.replicas = replicas

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("niyama_replica_up", "1 while the replica serves, 0 while down or restarting",
                               labels=["replica"])  # fmt: skip
        restarts = CounterMetricFamily("niyama_replica_restarts", "Times the replica was started again after a loss",
                                       labels=["replica"])  # fmt: skip
        requests = CounterMetricFamily(
            "niyama_replica_requests",
            "Requests ended on the replica, per tier and outcome (finished, failed, cancelled, moved)",
            labels=["replica", "tier", "outcome"],
        )  # fmt: skip
        steps = CounterMetricFamily("niyama_replica_steps", "Steps the replica ran, per outcome (ok, failed)",
                                    labels=["replica", "outcome"])  # fmt: skip
        in_flight = GaugeMetricFamily("niyama_replica_in_flight", "Requests on the replica", labels=["replica"])
        queued = GaugeMetricFamily("niyama_replica_queue_depth", "Requests waiting for compute, per tier",
                                   labels=["replica", "tier"])  # fmt: skip
        running = GaugeMetricFamily("niyama_replica_running", "Requests prefilling or decoding, per tier",
                                    labels=["replica", "tier"])  # fmt: skip
        kv_free = GaugeMetricFamily("niyama_replica_kv_blocks_free", "Free KV cache blocks", labels=["replica"])
        for replica in self.replicas.replicas:
            name = str(replica.index)
            up.add_metric([name], float(replica.up))
            restarts.add_metric([name], replica.stats.restarts)
            for (tier, outcome), count in sorted(replica.stats.requests.items()):
                requests.add_metric([name, tier, outcome], count)
            for outcome, count in sorted(replica.stats.steps.items()):
                steps.add_metric([name, outcome], count)
            in_flight.add_metric([name], len(replica.engine.generations))
            stats = replica.parts.scheduler.stats()
            for tier, tier_stats in stats.tiers.items():
                queued.add_metric([name, tier], tier_stats.queued)
                running.add_metric([name, tier], tier_stats.running + tier_stats.prefilling)
            kv_free.add_metric([name], stats.free_blocks)
        yield from (up, restarts, requests, steps, in_flight, queued, running, kv_free)

