"""Typed readers for settings that come from the environment.

Each helper raises ImproperlyConfigured with the variable's name on a bad
value, so a typo in a deployment fails at start-up instead of at 3 a.m.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value < minimum or value != value:  # NaN fails the second test
        raise ImproperlyConfigured(f"{name} must be a number >= {minimum}, got {raw!r}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """Comma-separated list; items are stripped and empty items dropped."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_rules(name: str, *, port_required: bool) -> list[str]:
    """A comma list of network rules (``tunnelsite.netrules``), each checked at start-up."""
    from tunnelsite.netrules import RuleErrors, parse_rules

    items = env_list(name, [])
    try:
        parse_rules(items, port_required=port_required)
    except RuleErrors as exc:
        problems = "; ".join(problem.replace("line", "item", 1) for problem in exc.problems)
        raise ImproperlyConfigured(f"{name}: {problems}") from None
    return items


def env_secret(name: str) -> str | None:
    """A secret from NAME or from the file named by NAME_FILE (Docker secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc}") from None
    return os.environ.get(name)


PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "insecure", "django-insecure"}


def is_placeholder_secret(value: str | None) -> bool:
    if value is None:
        return True
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_SECRETS or lowered.startswith("django-insecure") or len(lowered) < 20


def load_or_create_secret(path: Path) -> str:
    """Read the development secret, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(50)
    # O_EXCL: two processes starting at once must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


PG_CONNECT_TIMEOUT = 5  # seconds


def database_config(url: str | None, data_dir: Path) -> dict:
    """The default database: SQLite in the data dir, tuned for web + worker writers."""
    import dj_database_url

    if url:
        try:
            config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
        except Exception as exc:  # dj_database_url raises bare ValueError/KeyError
            raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    else:
        config = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(data_dir / "tunnelsite.sqlite3"),
            # Reuse connections: opening SQLite and running the PRAGMAs below on
            # every request costs more than most API views themselves.
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
        }
    if "postgresql" in config["ENGINE"]:
        # Django's backend, with connects bounded by a web request's deadline (tunnelsite.pgwatch).
        config["ENGINE"] = "tunnelsite.postgresql"
        # An unreachable server (packets dropped, not refused) would otherwise hold each request for
        # the kernel's connect timeout (~2 min); a ?connect_timeout= in the URL wins.
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", PG_CONNECT_TIMEOUT)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config.setdefault("OPTIONS", {}).update(
            {
                # The web process and the worker write concurrently: WAL lets
                # readers proceed, IMMEDIATE takes the write lock up front so
                # busy_timeout applies instead of a mid-transaction "locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 10,
            }
        )
        config["TEST"] = {"NAME": str(data_dir / "test-tunnelsite.sqlite3")}
    return config


def parse_port_ranges(name: str, raw: str) -> list[tuple[int, int]]:
    """``"8080, 5432, 6000-6010"`` → ``[(8080, 8080), (5432, 5432), (6000, 6010)]``."""
    ranges = []
    for item in (part.strip() for part in raw.split(",")):
        if item:
            ranges.append(_port_range(name, item))
    return ranges


def _port_range(name: str, item: str) -> tuple[int, int]:
    low_text, dash, high_text = item.partition("-")
    try:
        low, high = int(low_text.strip()), int(high_text.strip()) if dash else int(low_text.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}: {item!r} is not a port or a range like 20000-29999") from None
    if not 1 <= low <= high <= 65535:
        raise ImproperlyConfigured(f"{name}: {item!r} must satisfy 1 <= low <= high <= 65535")
    return low, high


def env_port_range(name: str, default: tuple[int, int]) -> tuple[int, int]:
    """One range of ports, ``low-high`` (or a single port)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    ranges = parse_port_ranges(name, raw)
    if len(ranges) != 1:
        raise ImproperlyConfigured(f"{name} must be one range like 20000-29999, got {raw!r}")
    return ranges[0]


def env_port_ranges(name: str, default: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A comma list of ports and ranges; set but empty means none."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return parse_port_ranges(name, raw)


def bind_port(bind: str) -> int | None:
    """The TCP port of a gunicorn ``--bind`` value (``host:port``, ``[::1]:port``, ``:port``); None for
    ``unix:`` sockets and values without a port."""
    if bind.startswith("unix:") or ":" not in bind:
        return None
    port = bind.rpartition(":")[2]
    return int(port) if port.isdigit() and 1 <= int(port) <= 65535 else None


# The port a database server listens on when its URL names none.
DEFAULT_DB_PORTS = {"postgresql": 5432, "mysql": 3306}


def database_port(config: dict) -> int | None:
    """The TCP port of the configured database server (its URL's, else the engine's usual one, which
    the server on this host most likely listens on even when tunnelsite uses its socket); None for SQLite."""
    engine = config.get("ENGINE", "").rsplit(".", 1)[-1]
    engine = "postgresql" if engine.startswith("postg") else engine
    if engine not in DEFAULT_DB_PORTS:
        return None
    port = str(config.get("PORT") or "")
    return int(port) if port.isdigit() else DEFAULT_DB_PORTS[engine]
