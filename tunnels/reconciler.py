"""Kept for old imports: the reconciler lives in the tunnels.worker package."""

from tunnels.worker.decide import precondition_error
from tunnels.worker.health import FAILURES, explain
from tunnels.worker.reconciler import Reconciler
from tunnels.worker.tracked import Tracked

__all__ = ["FAILURES", "Reconciler", "Tracked", "explain", "precondition_error"]
