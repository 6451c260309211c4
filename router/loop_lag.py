"""How late the event loop runs: a probe coroutine's oversleep, as a Prometheus histogram.

A task sleeps ``interval`` (5 ms) over and over and records by how much each
sleep overran (actual minus requested, in seconds) into
``niyama_event_loop_lag_seconds``. Whatever keeps the loop from running (a
forward pass holding the GIL, a blocking call, a long stretch of Python on
the loop itself) shows up as lag: a 200 ms stall is one 200 ms sample. An
idle loop still shows its timer granularity (uvloop's timers tick in whole
milliseconds, so ~1 ms is the floor there). `niyama bench loop-lag` reads
the series from /metrics during long prefill steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Histogram

NAME = "niyama_event_loop_lag_seconds"
INTERVAL = 0.005
BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5,
)  # fmt: skip


class LoopLagProbe:
    """``start()`` inside the running loop, ``await stop()`` at shutdown; samples go to ``registry``."""

    def __init__(self, registry: CollectorRegistry, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.histogram = Histogram(
            NAME, "Event-loop lag: oversleep of a probe's asyncio.sleep", buckets=BUCKETS, registry=registry
        )
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="niyama-loop-lag-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        observe, interval, clock = self.histogram.observe, self.interval, time.perf_counter
        while True:
            before = clock()
            await asyncio.sleep(interval)
            observe(max(0.0, clock() - before - interval))
