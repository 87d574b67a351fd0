from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tunnelsite import env

ROOT = Path(__file__).resolve().parent.parent


def test_env_bool(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    assert env.env_bool("X_BOOL") is True
    monkeypatch.setenv("X_BOOL", "off")
    assert env.env_bool("X_BOOL", True) is False
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        env.env_bool("X_BOOL")


def test_env_int(monkeypatch):
    assert env.env_int("X_INT_UNSET", 7) == 7
    monkeypatch.setenv("X_INT", "12")
    assert env.env_int("X_INT", 1) == 12
    for bad in ["abc", "1.5"]:
        monkeypatch.setenv("X_INT", bad)
        with pytest.raises(ImproperlyConfigured, match="X_INT must be an integer"):
            env.env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="between"):
        env.env_int("X_INT", 1, minimum=1, maximum=5)


def test_env_float_rejects_garbage(monkeypatch):
    monkeypatch.setenv("X_FLOAT", "nan")
    with pytest.raises(ImproperlyConfigured):
        env.env_float("X_FLOAT", 1.0)


def test_env_list(monkeypatch):
    monkeypatch.setenv("X_LIST", " a, b ,,c ")
    assert env.env_list("X_LIST") == ["a", "b", "c"]


def test_env_secret_from_file(monkeypatch, tmp_path):
    secret = tmp_path / "s"
    secret.write_text("from-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env.env_secret("X_SECRET") == "from-file"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        env.env_secret("X_SECRET")


def test_secret_key_generated_once_and_reused(tmp_path):
    path = tmp_path / "secret_key"
    first = env.load_or_create_secret(path)
    assert len(first) >= 50
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert env.load_or_create_secret(path) == first


def test_placeholder_secrets():
    for value in [None, "", "changeme", "django-insecure-abc", "short"]:
        assert env.is_placeholder_secret(value)
    assert not env.is_placeholder_secret("k" * 40)


def test_database_config_defaults_to_sqlite_with_wal(tmp_path):
    config = env.database_config(None, tmp_path)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert config["CONN_MAX_AGE"] > 0


def test_database_config_postgres_url(tmp_path):
    config = env.database_config("postgres://postgres@127.0.0.1:5432/tunnelsite", tmp_path)
    assert config["ENGINE"] == "tunnelsite.postgresql"  # Django's backend, connects bounded per request
    assert config["NAME"] == "tunnelsite"


def test_database_config_bad_url(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        env.database_config("nonsense://", tmp_path)


def test_production_refuses_placeholder_secret(tmp_path):
    envvars = {
        **os.environ,
        "TUNNELSITE_ENV": "production",
        "SECRET_KEY": "changeme",
        "TUNNELSITE_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run([sys.executable, "manage.py", "check"], env=envvars, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SECRET_KEY is missing or a placeholder" in result.stderr


WORKER_BATCH_SETTINGS = (
    "TUNNELSITE_WORKER_START_BATCH",
    "TUNNELSITE_WORKER_MAX_STARTUPS",
    "TUNNELSITE_WORKER_STOP_CONCURRENCY",
)


def _worker_batch_settings(tmp_path, **values: str) -> subprocess.CompletedProcess:
    envvars = {k: v for k, v in os.environ.items() if k not in WORKER_BATCH_SETTINGS}
    envvars.update(TUNNELSITE_DATA_DIR=str(tmp_path), **values)
    code = (
        "from django.conf import settings as s; "
        "print(s.WORKER_START_BATCH, s.WORKER_MAX_STARTUPS, s.WORKER_STOP_CONCURRENCY)"
    )
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        env=envvars,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_worker_batch_settings_come_from_the_environment_and_refuse_zero(tmp_path):
    given = dict(zip(WORKER_BATCH_SETTINGS, ("5", "3", "7"), strict=True))
    assert _worker_batch_settings(tmp_path, **given).stdout.split() == ["5", "3", "7"]
    refused = _worker_batch_settings(tmp_path, TUNNELSITE_WORKER_MAX_STARTUPS="0")
    assert refused.returncode != 0
    assert "TUNNELSITE_WORKER_MAX_STARTUPS must be between 1 and 10000, got 0" in refused.stderr


def test_worker_batch_settings_defaults():
    from tunnelsite import settings

    if any(name in os.environ for name in WORKER_BATCH_SETTINGS):
        pytest.skip("set in this environment")
    assert (settings.WORKER_START_BATCH, settings.WORKER_MAX_STARTUPS, settings.WORKER_STOP_CONCURRENCY) == (25, 10, 64)


def test_database_config_postgres_connects_with_a_timeout(tmp_path):
    config = env.database_config("postgres://postgres@127.0.0.1:5432/tunnelsite", tmp_path)
    assert config["OPTIONS"]["connect_timeout"] == env.PG_CONNECT_TIMEOUT
    config = env.database_config("postgres://postgres@127.0.0.1:5432/tunnelsite?connect_timeout=2", tmp_path)
    assert config["OPTIONS"]["connect_timeout"] == 2  # the URL's own value wins
