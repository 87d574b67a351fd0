"""The header's navigation: only pages whose URL name exists are shown.

Pages land one by one (tokens, SSH keys, ...); a missing one is simply left out
instead of pointing at a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse

# (label, URL name); the order is the header's.
ENTRIES = (
    ("Tunnels", "dashboard:tunnels"),
    ("Tokens", "dashboard:tokens"),
    ("Access keys", "dashboard:access-keys"),
    ("SSH keys", "dashboard:keys"),
    ("Known hosts", "dashboard:known-hosts"),
    ("Requests", "dashboard:requests"),
    ("Backups", "dashboard:backups"),
    ("History", "dashboard:history"),
    ("Account", "dashboard:account"),
)


@dataclass(frozen=True)
class NavEntry:
    label: str
    url: str
    current: bool


def entries(path: str) -> list[NavEntry]:
    """The entries that resolve; ``current`` marks the one ``path`` is under (the longest match)."""
    found = []
    for label, name in ENTRIES:
        try:
            found.append((label, reverse(name)))
        except NoReverseMatch:
            continue
    best = max((url for _, url in found if path.startswith(url)), key=len, default=None)
    return [NavEntry(label, url, url == best) for label, url in found]
