"""Scope checks for token-authenticated requests."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ALL_SCOPES, SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, ApiToken


def required_scope(request, view) -> str:
    """The scope a request needs: the view's ``required_scopes`` map, else by method."""
    mapping = getattr(view, "required_scopes", None) or {}
    action = getattr(view, "action", None)
    if action in mapping:
        return mapping[action]
    if request.method in mapping:
        return mapping[request.method]
    return SCOPE_READ if request.method in SAFE_METHODS else SCOPE_WRITE


def granted_scopes(request) -> set[str]:
    """Scopes of the credential: a token's own; sessions and legacy keys have all."""
    auth = getattr(request, "auth", None)
    scopes = set(auth.scopes) if isinstance(auth, ApiToken) else set(ALL_SCOPES)
    if not request.user.is_staff:
        scopes.discard(SCOPE_ADMIN)
    return scopes


class HasScope(BasePermission):
    message = "This credential lacks the required scope."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return True  # IsAuthenticated (or the view) decides
        needed = required_scope(request, view)
        if needed in granted_scopes(request):
            return True
        self.message = f"This token lacks the '{needed}' scope required for this request."
        return False
