"""Request throttles.

``UserThrottle``/``AnonThrottle`` limit every API request per user / per client
address on the per-process default cache: cheap (no query), but the limit is
per gunicorn worker. Failed password logins are counted in the ``shared``
database cache so the limit holds across all workers and machines.
"""

from __future__ import annotations

import hashlib
import time

from django.core.cache import caches
from rest_framework import throttling
from rest_framework.settings import api_settings


class _LiveRates:
    """Read the rate at use time (DRF binds THROTTLE_RATES at import, which tests cannot override)."""

    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_LiveRates, throttling.UserRateThrottle):
    scope = "user"


class AnonThrottle(_LiveRates, throttling.AnonRateThrottle):
    scope = "anon"


class LoginFailureThrottle(_LiveRates, throttling.SimpleRateThrottle):
    """Counts failed logins only: ``allow_request`` checks, ``record_failure`` counts.

    Subclasses key the count by username or by client address.
    """

    cache = caches["shared"]

    def key_for(self, request, username: str) -> str:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        self.key = self.key_for(request, self._username(request))
        self.history = self._live_history()
        return len(self.history) < self.num_requests

    def record_failure(self, request) -> None:
        self.key = self.key_for(request, self._username(request))
        history = self._live_history()
        history.insert(0, time.time())
        self.cache.set(self.key, history, self.duration)

    def _live_history(self) -> list[float]:
        now = time.time()
        return [stamp for stamp in self.cache.get(self.key, []) if stamp > now - self.duration]

    def wait(self) -> float | None:
        self.now = time.time()
        return super().wait() if self.history else None

    @staticmethod
    def _username(request) -> str:
        # A DRF request has .data; the dashboard's login form is a plain Django request (.POST).
        data = getattr(request, "data", None) or getattr(request, "POST", None) or {}
        value = data.get("username", "") if hasattr(data, "get") else ""
        return str(value).strip().lower()[:150]


class LoginUsernameThrottle(LoginFailureThrottle):
    scope = "login_username"

    def key_for(self, request, username: str) -> str:
        # Hashed: a username may hold characters a cache key should not.
        return self.cache_format % {"scope": self.scope, "ident": hashlib.sha256(username.encode()).hexdigest()}


class LoginAddressThrottle(LoginFailureThrottle):
    scope = "login_address"

    def key_for(self, request, username: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
