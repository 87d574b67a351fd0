"""The compat hash of the autossh manager (COMPAT.md "The hash")."""

from __future__ import annotations

import hashlib


def compat_hash(
    name: str, remote_host: str, remote_port: str, local_port: str, direction: str, interactive: bool
) -> str:
    flag = "true" if interactive else "false"
    source = f"{name}|{remote_host}|{remote_port}|{local_port}|{direction}|{flag}"
    # md5 is the original tool's identifier format, not a security measure.
    return hashlib.md5(source.encode("utf-8"), usedforsecurity=False).hexdigest()
