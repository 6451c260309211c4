"""The event-loop lag probe records a blocked loop as lag, and stops cleanly."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from niyama.router.loop_lag import NAME, LoopLagProbe


def sample(registry: CollectorRegistry, suffix: str, le: str | None = None) -> float:
    value = registry.get_sample_value(NAME + suffix, {"le": le} if le is not None else None)
    assert value is not None
    return value


def test_a_50ms_blocking_call_is_recorded_as_about_50ms_of_lag() -> None:
    registry = CollectorRegistry()
    probe = LoopLagProbe(registry)

    async def scenario() -> None:
        probe.start()
        while sample(registry, "_count") < 3:  # the probe runs: a few idle ticks
            await asyncio.sleep(0.001)
        time.sleep(0.050)  # blocks the loop, as a forward pass holding the GIL would
        await asyncio.sleep(0.02)  # the probe wakes late once, then ticks again
        await probe.stop()
        assert probe._task is None

    asyncio.run(scenario())
    count = sample(registry, "_count")
    late = count - sample(registry, "_bucket", "0.03")
    assert late == 1  # one stall, one late wake-up (not one per missed tick)
    assert sample(registry, "_bucket", "0.075") == count  # 45-50 ms (the block minus part of one 5 ms sleep)
    assert 0.045 <= sample(registry, "_sum") < 0.075 + 0.005 * count
    assert b"niyama_event_loop_lag_seconds_bucket" in generate_latest(registry)


def test_stop_without_start_and_twice_is_harmless() -> None:
    probe = LoopLagProbe(CollectorRegistry())

    async def scenario() -> None:
        await probe.stop()
        probe.start()
        probe.start()  # a second start keeps the one task
        await asyncio.sleep(0.012)
        await probe.stop()
        await probe.stop()

    asyncio.run(scenario())
    assert probe._task is None


def test_bucket_quantiles_interpolate_like_histogram_quantile() -> None:
    from niyama.bench.loop_lag_runs import Histogram

    before = Histogram([(0.001, 10), (0.005, 10), (0.05, 10), (float("inf"), 10)], 0.005, 10)
    after = Histogram([(0.001, 100), (0.005, 190), (0.05, 200), (float("inf"), 200)], 0.5, 200)
    window = after.minus(before)
    assert window.count == 190 and window.buckets[0] == (0.001, 90)
    assert abs(window.quantile(0.4) - 0.001 * 76 / 90) < 1e-12  # rank 76 of 90 in the first bucket (0 .. 1 ms)
    assert abs(window.quantile(0.5) - (0.001 + 0.004 * 5 / 90)) < 1e-12  # rank 95: 5 of 90 into (1, 5] ms
    assert abs(window.quantile(0.99) - (0.005 + 0.045 * (188.1 - 180) / 10)) < 1e-12
    assert window.max_bound() == 0.05
    assert Histogram([(1.0, 0), (float("inf"), 0)], 0, 0).quantile(0.99) is None


def test_a_shim_folder_wins_over_the_editable_install(tmp_path) -> None:
    """`--source`: the child imports niyama.router from the other tree, not from this checkout."""
    import os
    import subprocess
    import sys

    from niyama.bench.loop_lag_runs import make_shim

    tree = tmp_path / "tree"
    for name in ("router", "worker", "qos", "bench"):
        (tree / name).mkdir(parents=True)
        (tree / name / "__init__.py").write_text(f"WHERE = {name!r} + ' of the other tree'\n")
    shim = make_shim(tree, tmp_path / "shim")
    code = "import os, niyama.router, niyama.qos; print(os.path.realpath(niyama.router.__file__), niyama.qos.WHERE)"
    env = dict(os.environ, PYTHONPATH=str(shim))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == os.path.realpath(tree / "router" / "__init__.py")
    assert "qos of the other tree" in out.stdout
