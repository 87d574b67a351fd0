"""Bench-only settings: the project's settings with a URLconf that adds the ceiling view.

Selected by ``bench/api.py`` through DJANGO_SETTINGS_MODULE; never used in production.
"""

from tunnelsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.ceiling_urls"
