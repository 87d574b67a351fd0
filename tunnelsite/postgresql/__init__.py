"""Django's PostgreSQL backend, with connects bounded by the web request's deadline (``base``)."""
