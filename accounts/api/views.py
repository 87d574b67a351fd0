"""The accounts API: tokens, access keys, users, request history, password login."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import history, keys, tokens
from accounts.api import serializers as s
from accounts.api.openapi import (
    AUTH_ERRORS,
    BODY_ERRORS,
    KEY_ID,
    LOGIN_REQUEST,
    LOGIN_RESPONSE,
    NO_SUCH_USER,
    STAFF_ERRORS,
    TOKEN_CREATED,
    TOKEN_ID,
    TOKEN_REQUEST,
    error,
)
from accounts.models import ALL_SCOPES, DEFAULT_SCOPES, SCOPE_ADMIN, AccessKey, ApiRequest, ApiToken
from accounts.permissions import HasScope, IsStaffAdmin
from accounts.throttles import AnonThrottle, LoginAddressThrottle, LoginUsernameThrottle
from accounts.visibility import OwnedViewSet, OwnerFilter
from tunnelsite.api import error_response
from tunnelsite.pagination import TotalEntriesPagination
from tunnelsite.schema import NOT_FOUND

User = get_user_model()


@extend_schema_view(
    list=extend_schema(
        summary="List API tokens",
        description="Your unrevoked tokens, without their secrets; staff with the admin scope see everyone's.",
        responses={200: s.TokenSerializer(many=True), **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Get an API token",
        parameters=[TOKEN_ID],
        responses={200: s.TokenSerializer, 404: NOT_FOUND, **AUTH_ERRORS},
    ),
    destroy=extend_schema(
        summary="Revoke an API token",
        description="The token stops working at once; its row stays for the request history.",
        parameters=[TOKEN_ID],
        responses={204: None, 404: NOT_FOUND, **AUTH_ERRORS},
    ),
)
@extend_schema(tags=["tokens"])
class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, OwnedViewSet):
    """API tokens. The raw token is in the create response only; delete revokes."""

    serializer_class = s.TokenSerializer
    pagination_class = None
    filter_backends = [OwnerFilter]
    owner_param = "user"

    def base_queryset(self):
        return tokens.unrevoked(ApiToken.objects.select_related("user"))

    @extend_schema(
        summary="Create an API token",
        description=(
            "The raw token is in this response only; send it as `Authorization: Bearer tsk_…` (or `Token tsk_…`). "
            "A token may only hand out scopes the credential creating it has; `admin` only to staff."
        ),
        request=s.TokenCreateSerializer,
        responses={201: s.TokenCreatedSerializer, **BODY_ERRORS, **AUTH_ERRORS},
        examples=[TOKEN_REQUEST, TOKEN_CREATED],
    )
    def create(self, request) -> Response:
        data = s.TokenCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        token, raw = tokens.mint(
            request.user,
            label=data.validated_data["label"],
            scopes=data.validated_data.get("scopes", list(DEFAULT_SCOPES)),
            expires_in=data.validated_data.get("expires_in"),
        )
        token.token = raw
        return Response(s.TokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiToken) -> None:
        tokens.revoke(instance)


@extend_schema_view(
    list=extend_schema(
        summary="List access keys",
        description="Your access keys, without their secrets; staff with the admin scope see everyone's.",
        responses={200: s.AccessKeySerializer(many=True), **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Get an access key",
        parameters=[KEY_ID],
        responses={200: s.AccessKeySerializer, 404: NOT_FOUND, **AUTH_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete an access key",
        description="Signatures made with the key are refused from now on.",
        parameters=[KEY_ID],
        responses={204: None, 404: NOT_FOUND, **AUTH_ERRORS},
    ),
)
@extend_schema(tags=["access-keys"])
class AccessKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    OwnedViewSet,
):
    """Access keys for HTTP Signature auth (at most 10 per user). The secret is in the create response only."""

    serializer_class = s.AccessKeySerializer
    pagination_class = None
    filter_backends = [OwnerFilter]
    owner_param = "user"

    def base_queryset(self):
        return AccessKey.objects.select_related("user")

    @extend_schema(
        summary="Create an access key",
        description=(
            "The secret is in this response only; sign requests with it as the `httpSignature` scheme describes. "
            "At most 10 keys per user."
        ),
        request=s.AccessKeySerializer,
        responses={
            201: s.AccessKeyCreatedSerializer,
            **BODY_ERRORS,
            **AUTH_ERRORS,
            403: error(
                "The credential lacks the `write` scope (or a session request its CSRF token), "
                "or you already have 10 access keys."
            ),
        },
    )
    def create(self, request) -> Response:
        data = s.AccessKeySerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        key, secret = keys.create(
            request.user, label=data.validated_data.get("label", ""), scopes=data.validated_data.get("scopes")
        )
        key.secret = secret
        return Response(s.AccessKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Enable an access key",
        parameters=[KEY_ID],
        request=None,
        responses={200: s.AccessKeySerializer, 404: NOT_FOUND, **AUTH_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None) -> Response:
        return self._set_active(True)

    @extend_schema(
        summary="Disable an access key",
        description="Signatures made with the key are refused (401) until it is enabled again.",
        parameters=[KEY_ID],
        request=None,
        responses={200: s.AccessKeySerializer, 404: NOT_FOUND, **AUTH_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None) -> Response:
        return self._set_active(False)

    def _set_active(self, active: bool) -> Response:
        key = self.get_object()
        AccessKey.objects.filter(pk=key.pk).update(is_active=active)
        key.is_active = active
        return Response(s.AccessKeySerializer(key).data)


ADMIN_ONLY = dict.fromkeys(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"), SCOPE_ADMIN)
USERNAME_PATTERN = r"[\w.@+-]+"
USERNAME = OpenApiParameter(
    "username",
    {"type": "string", "pattern": f"^{USERNAME_PATTERN}$"},
    OpenApiParameter.PATH,
    description="The user's username.",
)
USER_FOUND = {404: NO_SUCH_USER, **STAFF_ERRORS}
# Changes staff may not make to their own account, by whatever method: each
# would lock them out of this API, possibly leaving nobody able to undo it.
SELF_LOCKOUT = {
    "is_active": "you cannot deactivate your own account",
    "is_staff": "you cannot remove staff status from your own account",
}
SELF_EDIT = "Staff cannot deactivate their own account or remove their own staff status (400 naming the field)."


def _self_lockout(request: Request, instance: AbstractBaseUser, changes: Mapping[str, Any]) -> dict[str, list[str]]:
    """The ``SELF_LOCKOUT`` rules ``changes`` to ``instance`` would break, as field errors; {} if none."""
    if instance.pk != request.user.pk:
        return {}
    return {field: [message] for field, message in SELF_LOCKOUT.items() if changes.get(field) is False}


@extend_schema_view(
    list=extend_schema(
        summary="List users",
        responses={200: s.UserSerializer(many=True), **STAFF_ERRORS},
    ),
    create=extend_schema(
        summary="Create a user",
        description="`password` is required and must pass the password validators.",
        responses={201: s.UserSerializer, **BODY_ERRORS, **STAFF_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Get a user",
        parameters=[USERNAME],
        responses={200: s.UserSerializer, **USER_FOUND},
    ),
    update=extend_schema(
        summary="Replace a user's profile and quotas",
        description=SELF_EDIT,
        parameters=[USERNAME],
        responses={200: s.UserSerializer, **BODY_ERRORS, **USER_FOUND},
    ),
    partial_update=extend_schema(
        summary="Change some of a user's fields",
        description=SELF_EDIT,
        parameters=[USERNAME],
        responses={200: s.UserSerializer, **BODY_ERRORS, **USER_FOUND},
    ),
    destroy=extend_schema(
        summary="Deactivate a user",
        description="The user can no longer log in and their tokens and keys stop working; their rows are kept.",
        parameters=[USERNAME],
        responses={
            204: None,
            400: error("You tried to deactivate your own account (or sent a NUL character)."),
            **USER_FOUND,
        },
    ),
)
@extend_schema(tags=["users"])
class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Staff only: users and their quotas. Delete deactivates (history is kept)."""

    serializer_class = s.UserSerializer
    permission_classes = [IsAuthenticated, HasScope, IsStaffAdmin]
    required_scopes = ADMIN_ONLY
    lookup_field = "username"
    lookup_value_regex = USERNAME_PATTERN
    pagination_class = None

    def get_queryset(self):
        return User.objects.annotate(tunnel_count=Count("tunnels")).order_by("username")

    def perform_update(self, serializer) -> None:
        refused = _self_lockout(self.request, serializer.instance, serializer.validated_data)
        if refused:
            raise ValidationError(refused)
        serializer.save()

    def perform_destroy(self, instance) -> None:
        # DELETE names no field, so the bare message, as before.
        if _self_lockout(self.request, instance, {"is_active": False}):
            raise ValidationError(SELF_LOCKOUT["is_active"])
        User.objects.filter(pk=instance.pk).update(is_active=False)


class MeView(APIView):
    """The caller's profile, quotas, usage and the scopes of the credential in use."""

    @extend_schema(
        tags=["users"],
        summary="Your profile",
        responses={200: s.MeSerializer, **AUTH_ERRORS},
    )
    def get(self, request) -> Response:
        user = request.user
        usage = {
            # Through the reverse relation: accounts does not import the tunnels app.
            "tunnels": user.tunnels.count(),
            "tokens": ApiToken.objects.owned_by(user).filter(revoked_at__isnull=True).count(),
            "access_keys": AccessKey.objects.owned_by(user).count(),
        }
        return Response(s.MeSerializer(user, context={"request": request, "usage": usage}).data)


@extend_schema_view(
    list=extend_schema(
        tags=["requests"],
        summary="Request history",
        responses={
            200: s.ApiRequestSerializer(many=True),
            400: error("A filter has a bad value (`fields` names it), or the request has a NUL character."),
            **AUTH_ERRORS,
        },
        parameters=[
            OpenApiParameter("method", str, description=history.FILTERS["method"]),
            OpenApiParameter("status", int, description=history.FILTERS["status"]),
            OpenApiParameter("path", str, description=history.FILTERS["path"]),
            OpenApiParameter("path_contains", str, description=history.FILTERS["path_contains"]),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description=history.FILTERS["since"]),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description=history.FILTERS["until"]),
        ],
    )
)
class ApiRequestViewSet(mixins.ListModelMixin, OwnedViewSet):
    """Request history, newest first. Your own requests; staff with the admin scope see everyone's."""

    serializer_class = s.ApiRequestSerializer
    pagination_class = TotalEntriesPagination
    filter_backends = [OwnerFilter]
    owner_param = "user"

    def base_queryset(self):
        queryset = ApiRequest.objects.select_related("user")
        return history.newest_first(history.filter_requests(queryset, self.request.query_params))


class LoginView(APIView):
    """JumpServer-style temporary token from a username and password.

    Failed attempts are counted per username and per client address across all
    workers; too many give 429 with ``retry_after``.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonThrottle]

    @extend_schema(
        tags=["authentication"],
        summary="Log in: a temporary token for a username and password",
        request=s.LoginSerializer,
        responses={
            201: s.LoginResponseSerializer,
            **BODY_ERRORS,
            400: error(
                "A missing field (`fields` names it), or a wrong username or password "
                "(`Invalid username or password`, the same for both)."
            ),
            429: error(
                "Too many failed logins for this username or from this address (counted across all workers), "
                "or too many requests; `retry_after` says when to try again."
            ),
        },
        examples=[LOGIN_REQUEST, LOGIN_RESPONSE],
        auth=[],
    )
    def post(self, request) -> Response:
        failure_throttles = [LoginUsernameThrottle(), LoginAddressThrottle()]
        for throttle in failure_throttles:
            if not throttle.allow_request(request, self):
                self.throttled(request, throttle.wait())
        data = s.LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)
        if user is None:
            for throttle in failure_throttles:
                throttle.record_failure(request)
            return error_response("Invalid username or password", status.HTTP_400_BAD_REQUEST)
        scopes = list(ALL_SCOPES) if user.is_staff else list(DEFAULT_SCOPES)
        token, raw = tokens.mint(
            user, label="password login", scopes=scopes, kind=ApiToken.KIND_TEMPORARY, expires_in=settings.TOKEN_TTL
        )
        body = {"token": raw, "keyword": "Bearer", "date_expired": token.expires_at}
        return Response(s.LoginResponseSerializer(body).data, status=status.HTTP_201_CREATED)
