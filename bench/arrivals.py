"""The bench's arrival processes: the simulator's own (``niyama.qos.arrivals``), so a seed gives both the same."""

from __future__ import annotations

from niyama.qos.arrivals import PROCESSES, Arrival, ArrivalProcess, arrivals

__all__ = ["PROCESSES", "Arrival", "ArrivalProcess", "arrivals"]
