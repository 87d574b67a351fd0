"""What users may read: this server's paths taken out of logs and errors (written once, used everywhere)."""

from __future__ import annotations

import os
import re

from django.conf import settings

_PATH_END = r"[^\s'\"`,;:)]*"  # ssh writes "path:line" and quotes paths


def _runtime_pattern() -> re.Pattern[str]:
    # Literal prefixes only: a leading "any path" class would backtrack quadratically over a long log line.
    bases = {"/tmp", os.environ.get("XDG_RUNTIME_DIR", "").rstrip("/")} - {""}  # noqa: S108
    alternatives = "|".join(re.escape(base) for base in sorted(bases)) + r"|/run/user/\d+"
    return re.compile(f"(?:{alternatives})/tunnelsite-[0-9a-f]{{16}}(?:/{_PATH_END})?")


def redact(text: str) -> str:
    """``text`` (ssh's output, a log, an error) without this server's paths.

    The data dir (key files, known_hosts, config), the agent's runtime dir,
    the server key and config and the worker's home become placeholders, so
    a user learns nothing about the server's layout or other users' ids.
    """
    if not text:
        return text
    data = re.escape(str(settings.DATA_DIR).rstrip("/"))
    rules: list[tuple[str, str]] = [
        (data + r"/ssh/pub/" + _PATH_END, "<key>"),
        (data + r"/known_hosts/" + _PATH_END, "<known_hosts>"),
        (data + r"/ssh/empty_config\b", "<ssh_config>"),
        (data + _PATH_END, "<data>"),
    ]
    for path, placeholder in ((settings.SSH_IDENTITY, "<server key>"), (settings.SSH_CONFIG, "<ssh_config>")):
        if path:
            rules.insert(0, (re.escape(str(path)) + _PATH_END, placeholder))
    home = os.path.expanduser("~").rstrip("/")
    if home:
        rules.append((re.escape(home) + r"(?=/)" + _PATH_END, "<home>"))
    text = _runtime_pattern().sub("<agent>", text)
    for pattern, placeholder in rules:
        text = re.sub(pattern, placeholder, text)
    return text


def redact_for(user, text: str) -> str:
    """``text`` as ``user`` may read it: staff see the server's paths, everybody else placeholders."""
    return text if getattr(user, "is_staff", False) else redact(text)
