"""Scheduling, pure Python: tiers, deadlines, queues, policies, KV accounting, simulation.

Nothing here imports torch or starlette, so every policy runs (and is tested)
deterministically on a virtual clock.
"""
