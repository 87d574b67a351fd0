"""Template helpers of the dashboard."""

from __future__ import annotations

from django import template

from tunnels.dashboard import nav

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_entries(context) -> list[nav.NavEntry]:
    request = context.get("request")
    return nav.entries(request.path if request is not None else "/")
