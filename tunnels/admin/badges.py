"""Colored badges for admin lists, drawn with inline styles (the admin loads no extra assets)."""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.safestring import SafeString

# Background colors that keep white text readable in the admin's light and dark themes.
GREEN, BLUE, ORANGE, RED, GREY = "#1e7e34", "#1f5fa8", "#b35c00", "#b3261e", "#5f6368"
STATUS_COLORS = {
    "running": GREEN,
    "starting": BLUE,
    "backoff": ORANGE,
    "failed": RED,
    "stopped": GREY,
    "needs_auth": ORANGE,  # an interactive tunnel whose login ended: a person must start it again
}
STYLE = "display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;background:{};white-space:nowrap"


def badge(text: str, color: str, title: str = "") -> SafeString:
    """A pill with ``text``; ``title`` is shown on hover (escaped like the text)."""
    return format_html('<span class="ts-badge" style="' + STYLE + '" title="{}">{}</span>', color, title, text)
