"""WSGI entry point for gunicorn: ``gunicorn tunnelsite.wsgi``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunnelsite.settings")
application = get_wsgi_application()
