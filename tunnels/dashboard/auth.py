"""Log in, log out and change password: Django's auth views with the dashboard's templates."""

from __future__ import annotations

import math

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import reverse_lazy

from accounts.throttles import LoginAddressThrottle, LoginUsernameThrottle


class LoginView(auth_views.LoginView):
    """Failed logins count against the same per-username and per-address limits as ``POST /api/v1/authentication/auth/``
    (shared across workers), so the form is no easier to guess passwords with than the API."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs) -> HttpResponse:
        self.throttles = [LoginUsernameThrottle(), LoginAddressThrottle()]
        for throttle in self.throttles:
            if not throttle.allow_request(request, self):
                return self.refuse(throttle.wait())
        return super().post(request, *args, **kwargs)

    def refuse(self, wait: float | None) -> HttpResponse:
        # An unbound form: a bound one would check the password while refused.
        seconds = math.ceil(wait or 60)
        form = self.get_form_class()(request=self.request)
        refusal = f"Too many failed logins; try again in {seconds} seconds."
        response = self.render_to_response(self.get_context_data(form=form, refusal=refusal), status=429)
        response["Retry-After"] = str(seconds)
        return response

    def form_invalid(self, form) -> HttpResponse:
        for throttle in self.throttles:
            throttle.record_failure(self.request)
        return super().form_invalid(form)


class LogoutView(auth_views.LogoutView):
    """POST only (Django's LogoutView refuses GET), so a link or an image cannot log anyone out."""


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "dashboard/password_change.html"
    success_url = reverse_lazy("dashboard:tunnels")

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, "Your password was changed.")
        return response
