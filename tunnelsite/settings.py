"""Django settings, read from the environment (see README "Configuration")."""

from __future__ import annotations

import socket
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from tunnelsite import __version__
from tunnelsite.env import (
    bind_port,
    database_config,
    database_port,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_port_range,
    env_port_ranges,
    env_rules,
    env_secret,
    env_str,
    is_placeholder_secret,
    load_or_create_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = __version__

DATA_DIR = Path(env_str("TUNNELSITE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = env_str("TUNNELSITE_ENV", "development").strip().lower() == "production"
DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_secret("SECRET_KEY") or ""
if PRODUCTION and is_placeholder_secret(SECRET_KEY):
    raise ImproperlyConfigured(
        "SECRET_KEY is missing or a placeholder; production mode (TUNNELSITE_ENV=production) "
        "needs a random secret of at least 20 characters"
    )
if not SECRET_KEY:
    SECRET_KEY = load_or_create_secret(DATA_DIR / "secret_key")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "tunnels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Early, so the recorded duration covers sessions, auth and the view.
    # Before the history middleware: a hanging PostgreSQL cannot hold its INSERT either.
    "tunnelsite.pgwatch.DatabaseWatchMiddleware",
    "accounts.middleware.RequestHistoryMiddleware",
    # Inside the history middleware, so its own INSERT keeps its short lock wait (accounts.middleware).
    "tunnelsite.faults.FaultMiddleware",
    "tunnelsite.middleware.RejectNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "tunnelsite.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tunnelsite.urls"
WSGI_APPLICATION = "tunnelsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_config(env_str("DATABASE_URL") or None, DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# "default" is per process (cheap; the general request throttles use it, so
# their limits are per gunicorn worker). "shared" is a database table (created
# by an accounts migration) for what must hold across workers: failed-login
# throttling.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "tunnelsite_cache"},
}
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "/login/"  # the dashboard's login (the admin keeps its own for staff)
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Request bodies: the largest legitimate body is a replace-all of a few
# thousand tunnels; anything bigger is refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TUNNELSITE_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    # Tried in this order (README "Authentication"); a credential that is
    # present but wrong is a 401, never a fall-through to anonymous.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "accounts.authentication.SignatureAuthentication",
        "accounts.authentication.LegacyApiKeyAuthentication",
        "accounts.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "accounts.throttles.UserThrottle",
        "accounts.throttles.AnonThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("TUNNELSITE_THROTTLE_USER", "1200/minute"),
        "anon": env_str("TUNNELSITE_THROTTLE_ANON", "120/minute"),
        # Failed password logins (POST /api/v1/authentication/auth/).
        "login_username": env_str("TUNNELSITE_THROTTLE_LOGIN_USERNAME", "10/minute"),
        "login_address": env_str("TUNNELSITE_THROTTLE_LOGIN_ADDRESS", "30/minute"),
    },
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.permissions.HasScope",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "tunnelsite.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tunnelsite.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "tunnelsite API",
    "DESCRIPTION": "Multi-user SSH tunnel manager: REST API v1 and the autossh-compatible API. "
    'Any operation may also answer `503 {"error", "retry_after"}` with a `Retry-After` header (the database '
    'did not answer; nothing to fix in the request) or `500 {"error": "internal error"}` (a bug; the details are '
    "in the server log), always as JSON; the calls answer both in their envelope with `error_code` 50.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",  # served by tunnels.api.docs.redoc_bundle_view, without Redocly's CDN logo
    # No "valid" badge from validator.swagger.io (drf-spectacular's default settings plus this).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    # Tunnel and session directions are the same choice set: one enum component.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tunnelsite.schema.document_bad_request",
    ],
    "ENUM_NAME_OVERRIDES": {"DirectionEnum": "tunnels.models.DIRECTION_CHOICES"},
    "TAGS": [
        {"name": "status", "description": "Health check (no authentication)."},
        {"name": "tunnels", "description": "Tunnels: configuration, desired state, observed status, logs, sessions."},
        {"name": "history", "description": "Every process lifetime of your tunnels, newest first (rustunnel shape)."},
        {"name": "backups", "description": "Configuration snapshots taken before every change; restore one."},
        {"name": "known-hosts", "description": "Host keys you trust per SSH server: first use, pasted, or accepted."},
        {
            "name": "calls",
            "description": 'sshreach.me-style calls; every answer is `{"message", "error_code", "success"}`.',
        },
        {"name": "tokens", "description": "API tokens (`tsk_…`): the raw token is shown once, at creation."},
        {"name": "access-keys", "description": "Access keys for HTTP Signature authentication (`httpSignature`)."},
        {"name": "users", "description": "Your profile; staff with the `admin` scope manage users and quotas."},
        {"name": "requests", "description": "History of API requests: who called what, with which credential."},
        {"name": "authentication", "description": "Password login for a temporary token (JumpServer style)."},
        {
            "name": "autossh-compat",
            "description": "The autossh SSH Tunnel Manager's API (also served at the root paths: /list, /status, ...).",
        },
    ],
    # The compat urls are mounted twice; document them once (under /api/autossh/).
    "PREPROCESSING_HOOKS": ["tunnels.compat.schema.document_compat_once"],
}

# --- tunnelsite ---------------------------------------------------------
API_KEYS = env_list("API_KEY", [])
API_KEY_USER = env_str("TUNNELSITE_API_KEY_USER", "admin")
TOKEN_PEPPER = env_secret("TUNNELSITE_TOKEN_PEPPER")
# Pepper rotation: new tokens use TOKEN_PEPPER under TOKEN_PEPPER_ID; tokens
# minted under a retired pepper still verify while it is listed here ("id=value,...").
TOKEN_PEPPER_ID = env_str("TUNNELSITE_TOKEN_PEPPER_ID", "default")
TOKEN_OLD_PEPPERS = dict(item.partition("=")[::2] for item in env_list("TUNNELSITE_TOKEN_OLD_PEPPERS", []))
TOKEN_TTL = env_int("TUNNELSITE_TOKEN_TTL", 24 * 3600, minimum=60)
DEFAULT_MAX_TUNNELS = env_int("TUNNELSITE_DEFAULT_MAX_TUNNELS", 50, minimum=0)
DOCS_PUBLIC = env_bool("TUNNELSITE_DOCS_PUBLIC", True)
COMPAT_CORS = env_bool("TUNNELSITE_COMPAT_CORS", True)
REQUEST_RETENTION_DAYS = env_int("TUNNELSITE_REQUEST_RETENTION_DAYS", 30, minimum=1)
# Requests waiting for the worker (?wait=) at once per web process; more answer at once as with wait=0,
# so waiting never holds every gunicorn thread (default: half of the 4 threads bin/run and docker start).
MAX_WAITING = env_int("TUNNELSITE_MAX_WAITING", 2, minimum=0)
# PostgreSQL only: a request still running this long after it arrived (its ?wait=N: N + 1 s) has its
# database connection cut, so a server that hangs gets a 503, not a request held forever (tunnelsite.pgwatch).
DB_REQUEST_LIMIT = env_float("TUNNELSITE_DB_REQUEST_LIMIT", 15.0, minimum=1.0)
# Interactive tunnels: how long ssh's prompt waits for a person's answer before the login is given up,
# and how long an answer (or answers sent with a start) may stay, encrypted, in the database unused.
PROMPT_TIMEOUT = env_int("TUNNELSITE_PROMPT_TIMEOUT", 120, minimum=5, maximum=3600)
PROMPT_ANSWER_TTL = env_int("TUNNELSITE_PROMPT_ANSWER_TTL", 30, minimum=5, maximum=600)

NODE_NAME = env_str("TUNNELSITE_NODE", socket.gethostname())
WORKER_LEASE_SECONDS = env_int("TUNNELSITE_WORKER_LEASE", 15, minimum=2)
WORKER_INTERVAL = env_float("TUNNELSITE_WORKER_INTERVAL", 0.25, minimum=0.01)
# The safety resync (a full pass: process scan, every tunnel, agent keys, log caps, history repair). Changes,
# exits and peers' lease expiries wake the worker as events; this only catches what they could miss, so it is
# slow: at 1,000 tunnels a full pass costs ~0.24 s of CPU, 2.4 % of a core every 10 s, 0.8 % every 30 s.
WORKER_RESYNC_SECONDS = env_int("TUNNELSITE_WORKER_RESYNC", 30, minimum=1)
# With change notifications working (PostgreSQL NOTIFY, or the web poking the worker on SQLite), the
# change marker is still read this often, in case one got lost (tunnels.worker.wake).
WORKER_FALLBACK_POLL = env_float("TUNNELSITE_WORKER_FALLBACK_POLL", 2.0, minimum=0.01)
# A failing tunnel is retried after BASE, 2*BASE, 4*BASE ... seconds, at most MAX.
WORKER_BACKOFF_BASE = env_float("TUNNELSITE_WORKER_BACKOFF_BASE", 1.0, minimum=0.05)
WORKER_BACKOFF_MAX = env_float("TUNNELSITE_WORKER_BACKOFF_MAX", 60.0, minimum=0.1)
# Starting many tunnels: at most START_BATCH are started per pass (the started ones are checked in between),
# and at most MAX_STARTUPS are spawned but not yet authenticated at once: sshd drops connections beyond its
# MaxStartups (default 10:30:100) while they authenticate.
WORKER_START_BATCH = env_int("TUNNELSITE_WORKER_START_BATCH", 25, minimum=1, maximum=10000)
WORKER_MAX_STARTUPS = env_int("TUNNELSITE_WORKER_MAX_STARTUPS", 10, minimum=1, maximum=10000)
# Stopping many tunnels: this many process groups are signalled at once and share one grace period.
WORKER_STOP_CONCURRENCY = env_int("TUNNELSITE_WORKER_STOP_CONCURRENCY", 64, minimum=1, maximum=10000)
AUTOSSH_BIN = env_str("TUNNELSITE_AUTOSSH", "autossh")
AUTOSSH_POLL = env_int("TUNNELSITE_AUTOSSH_POLL", 30, minimum=1)
SSH_CONFIG = env_str("TUNNELSITE_SSH_CONFIG", "")
# The identity of staff (and legacy API_KEY) tunnels only; ordinary users' tunnels use their own keys.
SSH_IDENTITY = env_str("TUNNELSITE_SSH_IDENTITY", "")
MAX_SSH_KEYS = env_int("TUNNELSITE_MAX_SSH_KEYS", 20, minimum=1)
SSH_SERVER_ALIVE_INTERVAL = env_int("TUNNELSITE_SSH_ALIVE_INTERVAL", 15, minimum=1)
SSH_SERVER_ALIVE_COUNT = env_int("TUNNELSITE_SSH_ALIVE_COUNT", 3, minimum=1)
SSH_CONNECT_TIMEOUT = env_int("TUNNELSITE_SSH_CONNECT_TIMEOUT", 10, minimum=1)
# Ports: -L tunnels of users without a range of their own listen in PORT_RANGE;
# RESERVED_PORTS are refused to everyone but staff (README "Ports on this host").
PORT_RANGE = env_port_range("TUNNELSITE_PORT_RANGE", (20000, 29999))
RESERVED_PORTS = env_port_ranges(
    "TUNNELSITE_RESERVED_PORTS",
    [
        (port, port)
        for port in (bind_port(env_str("TUNNELSITE_BIND", "127.0.0.1:8080")), database_port(DATABASES["default"]))
        if port is not None
    ],
)
LOG_MAX_BYTES = env_int("TUNNELSITE_LOG_MAX_BYTES", 1024 * 1024, minimum=4096)
# Network policy for non-staff tunnels (tunnels.netpolicy; README "Security model"): comma lists of rules.
ALLOWED_TARGETS = env_rules("TUNNELSITE_ALLOWED_TARGETS", port_required=True)
SSH_DESTINATIONS_ALLOW = env_rules("TUNNELSITE_SSH_DESTINATIONS_ALLOW", port_required=False)
SSH_DESTINATIONS_DENY = env_rules("TUNNELSITE_SSH_DESTINATIONS_DENY", port_required=False)
# A running tunnel's log is rotated past LOG_MAX_BYTES, keeping LOG_KEEP older copies (tunnels.logfiles);
# all of one user's logs and copies together stay under USER_LOG_MAX_BYTES (oldest copies go first).
LOG_KEEP = env_int("TUNNELSITE_LOG_KEEP", 2, minimum=0)
USER_LOG_MAX_BYTES = env_int("TUNNELSITE_USER_LOG_MAX_BYTES", 32 * 1024 * 1024, minimum=4096)
# "Address already in use" this many times in a row: the tunnel stays failed until started again or changed.
PORT_CLASH_TRIES = env_int("TUNNELSITE_PORT_CLASH_TRIES", 3, minimum=1)
# Config backups: each user keeps the newest BACKUP_KEEP and every backup younger than BACKUP_KEEP_DAYS.
BACKUP_KEEP = env_int("TUNNELSITE_BACKUP_KEEP", 50, minimum=1)
BACKUP_KEEP_DAYS = env_int("TUNNELSITE_BACKUP_KEEP_DAYS", 30, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
