"""Fixtures that run the real tunnel worker (owned by the reconciler issue)."""

from __future__ import annotations
