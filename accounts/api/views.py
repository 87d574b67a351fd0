"""The accounts API: tokens, access keys, users, request history, password login."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.db.models import Count
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import keys, tokens
from accounts.api import serializers as s
from accounts.models import ALL_SCOPES, DEFAULT_SCOPES, SCOPE_ADMIN, AccessKey, ApiRequest, ApiToken
from accounts.permissions import HasScope, IsStaffAdmin, acts_as_admin
from accounts.throttles import AnonThrottle, LoginAddressThrottle, LoginUsernameThrottle
from tunnels.models import Tunnel
from tunnelsite.api import error_response
from tunnelsite.pagination import TotalEntriesPagination
from tunnelsite.params import parse_since

User = get_user_model()
ERROR = OpenApiResponse(description='`{"error": "..."}`')
USER_PARAM = OpenApiParameter("user", str, description="Staff with the admin scope: only this username's rows.")


def _scoped(queryset, request, owner_field: str = "user"):
    """The one rule for accounts rows: your own, or anyone's (``?user=``) for staff acting as admin."""
    if not request.user.is_authenticated:  # schema generation runs the view anonymously
        return queryset.none()
    if not acts_as_admin(request):
        return queryset.filter(**{owner_field: request.user})
    username = request.query_params.get("user")
    return queryset.filter(**{f"{owner_field}__username": username}) if username else queryset


@extend_schema_view(list=extend_schema(parameters=[USER_PARAM]))
class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """API tokens. The raw token is in the create response only; delete revokes."""

    serializer_class = s.TokenSerializer
    pagination_class = None

    def get_queryset(self):
        queryset = ApiToken.objects.filter(revoked_at__isnull=True).select_related("user")
        return _scoped(queryset, self.request)

    @extend_schema(request=s.TokenCreateSerializer, responses={201: s.TokenCreatedSerializer, 400: ERROR})
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
        ApiToken.objects.filter(pk=instance.pk).update(revoked_at=timezone.now())


@extend_schema_view(list=extend_schema(parameters=[USER_PARAM]))
class AccessKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Access keys for HTTP Signature auth (at most 10 per user). The secret is in the create response only."""

    serializer_class = s.AccessKeySerializer
    pagination_class = None

    def get_queryset(self):
        return _scoped(AccessKey.objects.select_related("user"), self.request)

    @extend_schema(request=s.AccessKeySerializer, responses={201: s.AccessKeyCreatedSerializer, 400: ERROR, 403: ERROR})
    def create(self, request) -> Response:
        data = s.AccessKeySerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        key, secret = keys.create(
            request.user, label=data.validated_data.get("label", ""), scopes=data.validated_data.get("scopes")
        )
        key.secret = secret
        return Response(s.AccessKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.AccessKeySerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None) -> Response:
        return self._set_active(True)

    @extend_schema(request=None, responses={200: s.AccessKeySerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None) -> Response:
        return self._set_active(False)

    def _set_active(self, active: bool) -> Response:
        key = self.get_object()
        AccessKey.objects.filter(pk=key.pk).update(is_active=active)
        key.is_active = active
        return Response(s.AccessKeySerializer(key).data)


ADMIN_ONLY = dict.fromkeys(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"), SCOPE_ADMIN)


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
    lookup_value_regex = r"[\w.@+-]+"
    pagination_class = None

    def get_queryset(self):
        return User.objects.annotate(tunnel_count=Count("tunnels")).order_by("username")

    def perform_destroy(self, instance) -> None:
        if instance.pk == self.request.user.pk:
            raise ValidationError("you cannot deactivate your own account")
        User.objects.filter(pk=instance.pk).update(is_active=False)


class MeView(APIView):
    """The caller's profile, quotas, usage and the scopes of the credential in use."""

    @extend_schema(responses={200: s.MeSerializer})
    def get(self, request) -> Response:
        user = request.user
        usage = {
            "tunnels": Tunnel.objects.owned_by(user).count(),
            "tokens": ApiToken.objects.filter(user=user, revoked_at__isnull=True).count(),
            "access_keys": AccessKey.objects.filter(user=user).count(),
        }
        return Response(s.MeSerializer(user, context={"request": request, "usage": usage}).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("method", str, description="HTTP method, e.g. POST."),
            OpenApiParameter("status", int, description="Response status code."),
            OpenApiParameter("path", str, description="Path prefix, e.g. /api/v1/tunnels/."),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Only requests at or after this time."),
            USER_PARAM,
        ]
    )
)
class ApiRequestViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Request history, newest first. Your own requests; staff with the admin scope see everyone's."""

    serializer_class = s.ApiRequestSerializer
    pagination_class = TotalEntriesPagination

    def get_queryset(self):
        queryset = _scoped(ApiRequest.objects.select_related("user"), self.request)
        return self._filter(queryset, self.request.query_params).order_by("-created_at", "-id")

    @staticmethod
    def _filter(queryset, params):
        if params.get("method"):
            queryset = queryset.filter(method=params["method"].upper())
        if params.get("status"):
            if not (params["status"].isdigit() and 100 <= int(params["status"]) <= 599):
                raise ValidationError({"status": ["must be an HTTP status code (100-599)"]})
            queryset = queryset.filter(status=int(params["status"]))
        if params.get("path"):
            queryset = queryset.filter(path__startswith=params["path"])
        if params.get("since"):
            try:
                since = parse_since(params["since"])
            except ValueError as exc:
                raise ValidationError({"since": [str(exc)]}) from None
            queryset = queryset.filter(created_at__gte=since)
        return queryset


class LoginView(APIView):
    """JumpServer-style temporary token from a username and password.

    Failed attempts are counted per username and per client address across all
    workers; too many give 429 with ``retry_after``.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonThrottle]

    @extend_schema(
        request=s.LoginSerializer,
        responses={201: s.LoginResponseSerializer, 400: ERROR, 429: ERROR},
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
