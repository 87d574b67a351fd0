"""Django's PostgreSQL backend whose new connections respect the running web request's deadline.

``tunnelsite.pgwatch`` cuts a request's connection when the server hangs past the request's
deadline; a new connection attempt has no socket to cut yet, so it is bounded here instead: its
``connect_timeout`` is what is left of the deadline (libpq's minimum is 2 s), and once the deadline
has passed the request connects no more (a best-effort write that swallowed the cut must not open
a second connection to the hung server). Outside a request (the worker, manage.py) nothing changes.
"""

from __future__ import annotations

import math
from typing import Any

from django.db.backends.postgresql import base

from tunnelsite import pgwatch

LIBPQ_MIN_CONNECT_TIMEOUT = 2  # libpq treats 1 as 2


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        left = pgwatch.time_left()
        if left is not None:
            if left <= 0:
                raise self.Database.OperationalError("the request's time for the database is over")
            configured = int(conn_params.get("connect_timeout") or 0) or math.inf
            conn_params = {
                **conn_params,
                "connect_timeout": max(LIBPQ_MIN_CONNECT_TIMEOUT, min(configured, math.ceil(left))),
            }
        return super().get_new_connection(conn_params)
