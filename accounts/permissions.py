"""Scope checks for every credential.

Scopes: ``read`` (safe methods), ``operate`` (start/stop/restart), ``write``
(create/update/delete), ``admin`` (users, other users' objects; only effective
for staff). Views say what they need with ``required_scopes = {action or
method: scope}``; anything not listed needs ``read`` for safe methods and
``write`` otherwise. Sessions and legacy API keys carry every scope their user has.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ALL_SCOPES, SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, AccessKey, ApiToken


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
    """Scopes of the credential: a token's or access key's own; sessions and legacy keys have all."""
    auth = getattr(request, "auth", None)
    scopes = set(auth.scopes) if isinstance(auth, (ApiToken, AccessKey)) else set(ALL_SCOPES)
    if not request.user.is_staff:
        scopes.discard(SCOPE_ADMIN)
    return scopes


def acts_as_admin(request) -> bool:
    """Staff whose credential carries ``admin``: may see and manage other users' objects."""
    user = getattr(request, "user", None)
    return bool(user and user.is_authenticated and user.is_staff and SCOPE_ADMIN in granted_scopes(request))


class HasScope(BasePermission):
    """Refuses (403) a request whose credential lacks the scope the view requires; names the scope."""

    message = "This credential lacks the required scope."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return True  # IsAuthenticated (or the view) decides
        needed = required_scope(request, view)
        if needed in granted_scopes(request):
            return True
        if needed == SCOPE_ADMIN and not request.user.is_staff:
            self.message = "This request needs the 'admin' scope, which only staff users have."
        else:
            self.message = f"This credential lacks the '{needed}' scope required for this request."
        return False


class IsStaffAdmin(BasePermission):
    """Staff with the ``admin`` scope (the users API)."""

    message = "Only staff users with the 'admin' scope may do this."

    def has_permission(self, request, view) -> bool:
        return acts_as_admin(request)
