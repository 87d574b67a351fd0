"""The admin's side of interactive tunnels: the tunnel change page shows the login prompt ssh is asking
now and a form to answer it (``services.answer_prompt``, like every other surface).

A mixin of ``TunnelAdmin``; the answer posts to its own admin URL, so the change form's data is
never mixed with a secret.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from tunnels import services
from tunnels.models import Tunnel


class LoginPromptAdmin(admin.ModelAdmin):
    change_form_template = "admin/tunnels/tunnel/change_form.html"

    def get_urls(self):
        answer = self.admin_site.admin_view(require_POST(self.answer_prompt_view))
        return [path("<path:object_id>/prompt/", answer, name="tunnels_tunnel_prompt"), *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        tunnel = self.get_object(request, object_id)
        prompt = services.pending_prompt(tunnel) if tunnel is not None and tunnel.interactive else None
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "login_prompt": prompt})

    def answer_prompt_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        tunnel: Tunnel | None = self.get_object(request, object_id)
        if tunnel is None:
            raise Http404("No such tunnel.")
        if not self.has_change_permission(request, tunnel):
            raise PermissionDenied
        try:
            services.answer_prompt(tunnel, request.POST.get("answer"))
        except services.ServiceError as exc:
            messages.error(request, f"Not sent: {exc.message}.")
        else:
            messages.success(request, f"Answer sent: tunnel {tunnel.name} is logging in.")
        return redirect(reverse("admin:tunnels_tunnel_change", args=[tunnel.pk]))
