"""The docker files cannot be run here (no Docker engine); check what can be checked."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_defines_web_worker_postgres():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"web", "worker", "postgres"}
    assert "tunnel_worker" in compose["services"]["worker"]["command"]
    assert compose["services"]["web"]["environment"]["DATABASE_URL"].startswith("postgres://")


def test_dockerfile_installs_autossh_and_pinned_requirements():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "autossh" in text and "openssh-client" in text
    assert "pip install --no-cache-dir -r requirements.txt" in text


def test_requirements_are_pinned():
    for name in ["requirements.txt", "requirements-dev.txt"]:
        for line in (ROOT / name).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "-r")):
                assert "==" in line, f"{name}: {line} is not pinned"
