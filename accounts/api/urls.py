"""Accounts API under /api/v1/."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api import views

app_name = "accounts-api"

router = SimpleRouter()
router.register("tokens", views.TokenViewSet, basename="token")
router.register("access-keys", views.AccessKeyViewSet, basename="access-key")
router.register("users", views.UserViewSet, basename="user")
router.register("requests", views.ApiRequestViewSet, basename="request")

urlpatterns = [
    # Before the router, so "me" is never taken for a username.
    path("users/me/", views.MeView.as_view(), name="me"),
    path("authentication/auth/", views.LoginView.as_view(), name="auth"),
    *router.urls,
]
