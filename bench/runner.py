"""One open-loop run: send every request at its arrival time, whatever the server does, and collect records.

Bounded in time and count: requests are sent only during the workload's
arrival window, in-flight ones get ``drain_timeout`` seconds after the last
send, and whatever is still running then is cancelled (its connection closed,
so the server aborts it) and counted as a miss. With ``miss_budget`` the run
stops early, cancelling everything, once more requests than the budget are
certain to miss: an overloaded goodput probe costs seconds, not minutes. A
request cancelled by that stop is a miss if it had already missed, else
undecided (left out of the counts; see ``accounting``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from niyama.qos.config import TierConfig

from .accounting import STOPPED_MISSED, STOPPED_UNDECIDED, certain_misses, certainly_missed
from .client import Record, Target, new_session, stream
from .prompt_text import Prompt
from .workload import BenchRequest

WATCH_INTERVAL = 0.25  # seconds between checks of the miss budget
DRAIN_TIMEOUT = "unfinished when the drain timeout ran out"


@dataclass
class RunResult:
    records: list[Record]
    started: float  # perf_counter at the first scheduled send
    ended: float  # perf_counter when the last request finished or was cancelled
    stopped_early: bool  # the miss budget ran out
    max_send_lag: float  # worst delay of a send past its scheduled time (the client's own lateness)

    @property
    def wall_seconds(self) -> float:
        return self.ended - self.started


async def run_requests(
    requests: Sequence[BenchRequest],
    prompts: Sequence[Prompt],
    targets: Mapping[str, Target],
    tiers: TierConfig,
    drain_timeout: float,
    request_timeout: float,
    miss_budget: int | None = None,
    on_done: Callable[[Record, int], None] | None = None,
) -> RunResult:
    """Send ``requests`` (``prompts[i]`` for ``requests[i]``) to ``targets[tier]``; ``on_done(record, misses)``."""
    records = [Record(r, targets[r.tier].url, p.tokens) for r, p in zip(requests, prompts)]
    tasks: list[asyncio.Task] = []
    stop = asyncio.Event()
    lag = 0.0
    async with new_session(request_timeout) as session:
        start = time.perf_counter() + 0.05

        def finished(task: asyncio.Task) -> None:
            if on_done is not None and not task.cancelled():
                on_done(task.result(), certain_misses(records, tiers, time.perf_counter()))

        async def send_all() -> None:
            nonlocal lag
            for request, prompt, record in zip(requests, prompts, records):
                delay = start + request.arrival - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag = max(lag, time.perf_counter() - start - request.arrival)
                task = asyncio.create_task(stream(session, targets[request.tier], prompt.text, record))
                task.add_done_callback(finished)
                tasks.append(task)

        async def watch() -> None:
            while True:
                await asyncio.sleep(WATCH_INTERVAL)
                if certain_misses(records, tiers, time.perf_counter()) > miss_budget:
                    stop.set()
                    return

        sender = asyncio.create_task(send_all())
        watcher = asyncio.create_task(watch()) if miss_budget is not None else None
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([sender, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set() and tasks:
            drain = asyncio.create_task(asyncio.wait(tasks, timeout=drain_timeout))
            await asyncio.wait([drain, stopper], return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
        now = time.perf_counter()
        for record in records:
            if record.sent is not None and not record.done:
                if not stop.is_set():
                    record.error = DRAIN_TIMEOUT
                else:
                    missed = certainly_missed(record, tiers.tier(record.request.tier).targets, now)
                    record.error = STOPPED_MISSED if missed else STOPPED_UNDECIDED
        for task in (sender, stopper, watcher, *tasks):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(sender, stopper, *(t for t in (watcher,) if t), *tasks, return_exceptions=True)
        ended = time.perf_counter()
    sent = [r for r in records if r.sent is not None]
    return RunResult(sent, start, ended, stop.is_set(), lag)
