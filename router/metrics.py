"""/metrics: TGI's series under TGI's names, and Niyama's per-tier QoS series beside them.

One `Metrics` per app, each with its own prometheus_client registry (never
the global one), so several apps can live in one process (tests). It is the
engine's `EngineObserver` (batch series and the scheduler's time per step
from `step_done`, per-tier SLO outcomes from `request_done`) and the routes
report each HTTP request's timings and refusals to it. A miss is
`qos.slo.is_miss`, the rule the bench and the simulator's report count by:
per tier, requests are judged when they finish, fail, are refused
(`niyama_tier_rejected_total`) or are cancelled by their client after
already missing; attainment is met / judged.
Scheduler state (queue depth, relegations, KV blocks, predictor error) is read
from `scheduler.stats()` at scrape time.

TGI's counters carry no `_total` suffix (metrics-rs names), which
prometheus_client cannot express, so those few are rendered here by hand.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from niyama.engine.api import GenerationHandle
from niyama.qos.config import TierConfig
from niyama.qos.plan import Plan, StepResult
from niyama.qos.slo import CANCELLED, ENDS, FINISHED, OBJECTIVES, REJECTED, is_miss
from niyama.qos.stats import SchedulerStats

DURATION_BUCKETS = tuple(0.00015 * 1.5**n for n in range(35))  # TGI: 35 geometric buckets from 0.1 ms x 1.5
# Per-tier latencies: buckets dense around the usual targets (tens of ms between tokens, seconds to the
# first token, minutes to the last) so histogram_quantile stays close to the truth up to an hour.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60,
    120, 300, 600, 1800, 3600,
)  # fmt: skip
# The scheduler's time to plan one step: tens of microseconds to tens of milliseconds, dense around 1-2 ms.
SCHEDULE_BUCKETS = (
    0.00002, 0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1,
)  # fmt: skip
REJECT_REASONS = ("overloaded", "too_large", "unavailable")  # 429, 422 (never fits the KV cache), 503
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PlainCounter:
    """A counter rendered under its exact name (`tgi_request_count`, not `..._total`)."""

    def __init__(self, name: str, documentation: str, label: str | None = None) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.values: dict[str, float] = defaultdict(float)

    def inc(self, label_value: str = "", amount: float = 1.0) -> None:
        self.values[label_value] += amount

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        if self.label is None:
            lines.append(f"{self.name} {self.values['']}")
        else:
            lines += [f'{self.name}{{{self.label}="{value}"}} {count}' for value, count in sorted(self.values.items())]
        return "\n".join(lines) + "\n"


def _linear(limit: int) -> tuple[float, ...]:
    return tuple(limit / 100 * (x + 1) for x in range(100))


class Metrics:
    def __init__(self, tiers: TierConfig, max_input_tokens: int, max_total_tokens: int) -> None:
        self.tiers = tiers
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.request_count = PlainCounter("tgi_request_count", "Total number of requests")
        self.request_success = PlainCounter("tgi_request_success", "Number of successful requests")
        self.request_failure = PlainCounter("tgi_request_failure", "Number of failed requests", "err")
        self.batch_count = PlainCounter("tgi_batch_inference_count", "Inference calls per method", "method")
        self.batch_success = PlainCounter("tgi_batch_inference_success", "Successful inference calls", "method")
        self.batch_failure = PlainCounter("tgi_batch_inference_failure", "Failed inference calls", "method")

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets=DURATION_BUCKETS, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.queue_size = gauge("tgi_queue_size", "Current queue size")
        self.batch_current_size = gauge("tgi_batch_current_size", "Current batch size")
        self.batch_current_max_tokens = gauge("tgi_batch_current_max_tokens", "KV tokens held by the current batch")
        self.batch_max_total_tokens = gauge("tgi_batch_max_total_tokens", "KV cache capacity in tokens")
        self.request_duration = histogram("tgi_request_duration", "Total time spent processing the request")
        self.validation_duration = histogram("tgi_request_validation_duration", "Time spent validating the request")
        self.queue_duration = histogram("tgi_request_queue_duration", "Time spent in the queue per request")
        self.inference_duration = histogram("tgi_request_inference_duration", "Request inference duration")
        self.time_per_token = histogram("tgi_request_mean_time_per_token_duration", "Mean time per token")
        self.input_length = histogram("tgi_request_input_length", "Input tokens per request", _linear(max_input_tokens))
        self.generated_tokens = histogram(
            "tgi_request_generated_tokens", "Generated tokens per request", _linear(max_total_tokens)
        )
        self.max_new_tokens = histogram(
            "tgi_request_max_new_tokens", "Maximum new tokens per request", _linear(max_total_tokens)
        )
        self.batch_duration = histogram("tgi_batch_inference_duration", "Batch inference duration", labels=("method",))
        self.forward_duration = histogram(
            "tgi_batch_forward_duration", "Batch forward duration per method", labels=("method",)
        )
        self.batch_next_size = histogram("tgi_batch_next_size", "Batch size of the next batch", tuple(range(1, 1025)))

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("tier",)) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.tier_requests = counter(
            "niyama_tier_requests", "Requests ended, per tier and outcome (finished, failed, cancelled, rejected)",
            ("tier", "outcome"),
        )  # fmt: skip
        self.rejected = counter(
            "niyama_tier_rejected", "Requests refused before they started, per tier and reason (overloaded: 429, "
            "too_large: never fits the KV cache, unavailable: no replica serves or shutting down)", ("tier", "reason"),
        )  # fmt: skip
        self.slo_judged = counter(
            "niyama_slo_judged", "Requests judged: finished, failed, rejected, and cancelled after a miss"
        )
        self.slo_misses = counter("niyama_slo_misses", "Judged requests that missed (qos.slo.is_miss)")
        self.slo_met = counter("niyama_slo_met", "Judged requests that met their primary objective (TTFT or TTLT)")
        self.slo_evaluated = counter("niyama_slo_evaluated", "Finished requests whose objectives were checked")
        self.slo_violations = Counter(
            "niyama_slo_violations",
            "SLO violations by objective (ttft, tbt, ttlt)",
            ("tier", "kind"),
            registry=registry,
        )
        self.slo_attainment = gauge("niyama_slo_attainment", "Met / judged requests per tier (1 before any)", ("tier",))
        self.schedule = histogram("niyama_schedule_seconds", "Scheduler time to plan each step", SCHEDULE_BUCKETS)
        self.ttft = histogram("niyama_ttft_seconds", "Time to first token, per tier", LATENCY_BUCKETS, ("tier",))
        self.tbt = histogram("niyama_tbt_seconds", "Every gap between tokens, per tier", LATENCY_BUCKETS, ("tier",))
        self._tbt_by_tier = {tier: self.tbt.labels(tier) for tier in tiers.names}  # observed once per token
        self.ttlt = histogram("niyama_ttlt_seconds", "Time to last token, per tier", LATENCY_BUCKETS, ("tier",))
        self.queue_depth = gauge("niyama_queue_depth", "Requests waiting for compute, per tier", ("tier",))
        self.running = gauge("niyama_running", "Requests prefilling or decoding, per tier", ("tier",))
        self.relegated = gauge("niyama_relegated", "Relegated requests not yet finished, per tier", ("tier",))
        self.predictor_error = gauge("niyama_predictor_error", "Latency predictor's mean absolute percentage error")
        self.kv_free = gauge("niyama_kv_blocks_free", "Free KV cache blocks")
        self.kv_total = gauge("niyama_kv_blocks_total", "KV cache blocks")
        self.kv_cached = gauge("niyama_kv_blocks_cached", "KV blocks holding a reusable prefix (prefix cache)")
        self._slo_counts: dict[str, list[int]] = {tier: [0, 0] for tier in tiers.names}  # judged, met
        for tier in tiers.names:  # every tier's series exist from the start, so dashboards and rate() see zeros
            self.slo_attainment.labels(tier).set(1.0)
            for family in (self.slo_judged, self.slo_misses, self.slo_met, self.slo_evaluated):
                family.labels(tier)
            for kind in OBJECTIVES:
                self.slo_violations.labels(tier, kind)
            for outcome in ENDS:
                self.tier_requests.labels(tier, outcome)
            for reason in REJECT_REASONS:
                self.rejected.labels(tier, reason)

    # -- EngineObserver --------------------------------------------------------

    def step_done(self, plan: Plan, result: StepResult | None, seconds: float, schedule_seconds: float) -> None:
        self.schedule.observe(schedule_seconds)
        method = "prefill" if plan.shape.prefill_tokens else "decode"
        self.batch_count.inc(method)
        self.batch_next_size.observe(len(plan.chunks))
        self.batch_duration.labels(method).observe(seconds)
        if result is None:
            self.batch_failure.inc(method)
            return
        self.batch_success.inc(method)
        self.forward_duration.labels(method).observe(result.seconds)

    def token_done(self, generation: GenerationHandle, gap: float | None) -> None:
        if gap is not None:
            self._tbt_by_tier[generation.request.tier].observe(gap)

    def request_done(self, generation: GenerationHandle) -> None:
        tier, end = generation.request.tier, generation.ended_as or CANCELLED
        self.tier_requests.labels(tier, end).inc()
        if end != FINISHED:  # failed: a miss; cancelled: one if its deadline had passed when its client left
            ended = generation.finished if generation.finished is not None else generation.request.arrival
            self._judge(tier, is_miss(end, generation.slo.primary_violated(ended)))
            return
        outcome = generation.slo.outcome()
        if outcome.ttft is not None:
            self.ttft.labels(tier).observe(outcome.ttft)
            self.ttlt.labels(tier).observe(outcome.ttlt)
        self.slo_evaluated.labels(tier).inc()
        for kind in outcome.violations:
            self.slo_violations.labels(tier, kind).inc()
        self._judge(tier, is_miss(end, outcome.missed))

    def _judge(self, tier: str, missed: bool | None) -> None:
        if missed is None:
            return
        self.slo_judged.labels(tier).inc()
        (self.slo_misses if missed else self.slo_met).labels(tier).inc()
        counts = self._slo_counts[tier]
        counts[0] += 1
        counts[1] += not missed
        self.slo_attainment.labels(tier).set(counts[1] / counts[0])

    # -- HTTP requests ---------------------------------------------------------

    def request_received(self) -> None:
        self.request_count.inc()

    def request_failed(self, error_type: str) -> None:
        self.request_failure.inc(error_type)

    def request_rejected(self, tier: str, reason: str, count: int = 1) -> None:
        """``count`` sequences of a ``tier`` request refused before they started: judged, as misses."""
        if tier not in self._slo_counts or reason not in REJECT_REASONS:
            return  # an unknown tier is the client's error (422), not a refusal
        self.tier_requests.labels(tier, REJECTED).inc(count)
        self.rejected.labels(tier, reason).inc(count)
        for _ in range(count):
            self._judge(tier, is_miss(REJECTED))

    def request_succeeded(
        self, total: float, validation: float, queue: float, inference: float, input_length: int, generated: int,
        max_new_tokens: int,
    ) -> None:  # fmt: skip
        self.request_success.inc()
        self.request_duration.observe(total)
        self.validation_duration.observe(validation)
        self.queue_duration.observe(queue)
        self.inference_duration.observe(inference)
        self.time_per_token.observe(inference / max(generated, 1))
        self.input_length.observe(input_length)
        self.generated_tokens.observe(generated)
        self.max_new_tokens.observe(max_new_tokens)

    # -- scrape ----------------------------------------------------------------

    def render(self, stats: SchedulerStats) -> bytes:
        self.queue_size.set(stats.queued)
        self.batch_current_size.set(stats.running + stats.prefilling)
        self.batch_current_max_tokens.set((stats.total_blocks - stats.free_blocks) * stats.block_size)
        self.batch_max_total_tokens.set(stats.total_blocks * stats.block_size)
        self.kv_free.set(stats.free_blocks)
        self.kv_total.set(stats.total_blocks)
        self.kv_cached.set(stats.cached_blocks)
        self.predictor_error.set(stats.predictor_error if stats.predictor_error is not None else float("nan"))
        relegations = PlainCounter("niyama_relegations_total", "Requests ever relegated, per tier", "tier")
        preemptions = PlainCounter("niyama_preemptions_total", "KV-pressure preemptions, per tier", "tier")
        cached = PlainCounter("niyama_prompt_tokens_cached_total", "Prompt tokens served from the prefix cache", "tier")
        computed = PlainCounter("niyama_prompt_tokens_computed_total", "Prompt tokens computed (not cached)", "tier")
        evictions = PlainCounter("niyama_kv_evictions_total", "Cached KV blocks evicted for other tokens")
        evictions.inc(amount=stats.evictions)
        for tier, tier_stats in stats.tiers.items():
            self.queue_depth.labels(tier).set(tier_stats.queued)
            self.running.labels(tier).set(tier_stats.running + tier_stats.prefilling)
            self.relegated.labels(tier).set(tier_stats.relegated)
            relegations.inc(tier, tier_stats.relegated_total)
            preemptions.inc(tier, tier_stats.preempted_total)
            cached.inc(tier, tier_stats.prompt_tokens_cached)
            computed.inc(tier, tier_stats.prompt_tokens_computed)
        counters = (
            self.request_count, self.request_success, self.request_failure, self.batch_count, self.batch_success,
            self.batch_failure, relegations, preemptions, cached, computed, evictions,
        )  # fmt: skip
        return "".join(counter.render() for counter in counters).encode() + generate_latest(self.registry)
