"""Scheduling, pure Python: tiers, deadlines, queues, policies, KV accounting, simulation.

Nothing here imports torch or starlette, so every policy runs (and is tested)
deterministically on a virtual clock. Where things live:

- tiers and their files: ``tiers``, ``config``, ``api_keys``, ``durations``
- requests and deadlines: ``request``, ``deadlines``, ``slo`` (SLO accounting)
- the scheduler: ``scheduler`` (core and ``make_scheduler``), ``policy``
  (presets and switches), ``intake``, ``queues``, ``chunking``,
  ``relegation``, ``preemption``, ``load``, ``state``, ``stats``
- memory: ``kv_blocks``; the worker boundary: ``plan``
- step latency: ``predictor``, ``fitting``
- simulation: ``traces``, ``workload``, ``simulator``, ``report``,
  ``capacity``, ``simulate_cli`` (`niyama simulate`)
"""
