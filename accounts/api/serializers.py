"""Serializers of the accounts API. Raw tokens and secrets appear only in create responses."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts import profile
from accounts.models import ALL_SCOPES, AccessKey, ApiRequest, ApiToken, grant_problems
from accounts.tokens import scope_problem

User = get_user_model()


@extend_schema_field({"anyOf": [{"type": "string", "format": "email"}, {"type": "string", "maxLength": 0}]})
class OptionalEmailField(serializers.EmailField):
    """A user's email: an address, or empty when none is set (``format: email`` alone would refuse "")."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=254, allow_blank=True, required=False, **kwargs)


class ScopesField(serializers.ListField):
    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.ChoiceField(choices=ALL_SCOPES), allow_empty=False, **kwargs)


def check_grantable(scopes: list[str], request) -> list[str]:
    """A credential may only hand out scopes it has; ``admin`` only to staff."""
    from accounts.permissions import granted_scopes

    scopes = sorted(set(scopes))
    if problem := scope_problem(request.user, scopes):
        raise serializers.ValidationError(problem)
    beyond = set(scopes) - granted_scopes(request)
    if beyond:
        raise serializers.ValidationError(
            f"this credential cannot grant scopes it does not have: {', '.join(sorted(beyond))}"
        )
    return scopes


class TokenSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    prefix = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "label", "kind", "prefix", "scopes", "user", "created_at", "last_used_at", "expires_at"]
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=100)
    scopes = ScopesField(required=False)
    expires_in = serializers.IntegerField(
        required=False, min_value=60, max_value=10 * 365 * 86400, help_text="Lifetime in seconds; none = no expiry."
    )

    def validate_scopes(self, value: list[str]) -> list[str]:
        return check_grantable(value, self.context["request"])


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The raw token. Shown only in this response.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class AccessKeySerializer(serializers.ModelSerializer):
    label = serializers.CharField(max_length=100, required=False, allow_blank=True)
    scopes = ScopesField(required=False)

    class Meta:
        model = AccessKey
        fields = ["id", "label", "scopes", "is_active", "created_at", "last_used_at"]
        read_only_fields = ["id", "is_active", "created_at", "last_used_at"]

    def validate_scopes(self, value: list[str]) -> list[str]:
        return check_grantable(value, self.context["request"])


class AccessKeyCreatedSerializer(AccessKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="The key secret. Shown only in this response.")

    class Meta(AccessKeySerializer.Meta):
        fields = [*AccessKeySerializer.Meta.fields, "secret"]


class UsageSerializer(serializers.Serializer):
    tunnels = serializers.IntegerField()
    tokens = serializers.IntegerField()
    access_keys = serializers.IntegerField()


class QuotasSerializer(serializers.Serializer):
    max_tunnels = serializers.IntegerField(allow_null=True, help_text="null: no limit (staff).")
    local_port_min = serializers.IntegerField()
    local_port_max = serializers.IntegerField()
    allow_nonloopback_bind = serializers.BooleanField()


def _valid_rules(field: str, value: str) -> str:
    problems = grant_problems(field, value)
    if problems:
        raise serializers.ValidationError(problems)
    return value


class NetworkGrantsSerializer(serializers.Serializer):
    allow_nonloopback_target = serializers.BooleanField(
        help_text="-R tunnels may connect to public addresses beyond this host (true for staff)."
    )
    allowed_targets = serializers.ListField(
        child=serializers.CharField(), help_text="-R targets on this host or its networks granted to you."
    )
    ssh_destinations = serializers.ListField(
        child=serializers.CharField(),
        help_text="SSH servers you may reach although the server-wide policy denies them.",
    )
    policy_exempt = serializers.BooleanField(help_text="Staff: no target or destination policy applies.")


class UserSerializer(serializers.ModelSerializer):
    """Staff view of a user and their quotas (the users API)."""

    email = OptionalEmailField()
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})
    effective_max_tunnels = serializers.IntegerField(read_only=True)
    tunnel_count = serializers.IntegerField(read_only=True, help_text="Tunnels the user owns now.")

    class Meta:
        model = User
        fields = [
            "username",
            "email",
            "first_name",
            "last_name",
            "is_staff",
            "is_active",
            "password",
            "max_tunnels",
            "effective_max_tunnels",
            "local_port_min",
            "local_port_max",
            "allow_nonloopback_bind",
            "allow_nonloopback_target",
            "allowed_targets",
            "ssh_destinations",
            "tunnel_count",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["date_joined", "last_login"]

    def validate_password(self, value: str) -> str:
        validate_password(value, self.instance)
        return value

    def validate_allowed_targets(self, value: str) -> str:
        return _valid_rules("allowed_targets", value)

    def validate_ssh_destinations(self, value: str) -> str:
        return _valid_rules("ssh_destinations", value)

    def validate(self, attrs: dict) -> dict:
        low = attrs.get("local_port_min", getattr(self.instance, "local_port_min", None))
        high = attrs.get("local_port_max", getattr(self.instance, "local_port_max", None))
        if (low is None) != (high is None):
            raise serializers.ValidationError(
                {"local_port_min": ["set both local_port_min and local_port_max, or neither (the server-wide pool)"]}
            )
        if low is not None and not 1 <= low <= high <= 65535:
            raise serializers.ValidationError(
                {"local_port_min": ["local port range must satisfy 1 <= local_port_min <= local_port_max <= 65535"]}
            )
        if self.instance is None and not attrs.get("password"):
            raise serializers.ValidationError({"password": ["This field is required."]})
        return attrs

    def create(self, validated_data: dict):
        password = validated_data.pop("password")
        user = User(**validated_data)
        user.set_password(password)
        user.save()
        user.tunnel_count = 0
        return user

    def update(self, instance, validated_data: dict):
        password = validated_data.pop("password", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        if password:
            instance.set_password(password)
        instance.save()
        return instance


class MeSerializer(serializers.ModelSerializer):
    """Anyone's own profile: quotas, usage and the scopes of the credential in use."""

    email = OptionalEmailField(read_only=True)
    quotas = serializers.SerializerMethodField()
    network = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    auth_method = serializers.SerializerMethodField()
    scopes = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = [
            "username",
            "email",
            "first_name",
            "last_name",
            "is_staff",
            "quotas",
            "network",
            "usage",
            "auth_method",
            "scopes",
        ]
        read_only_fields = fields

    @extend_schema_field(QuotasSerializer)
    def get_quotas(self, user) -> dict:
        return profile.quotas(user)

    @extend_schema_field(NetworkGrantsSerializer)
    def get_network(self, user) -> dict:
        """The user's own grants, read-only (staff change them in the users API or the admin)."""
        return profile.network(user)

    @extend_schema_field(UsageSerializer)
    def get_usage(self, user) -> dict:
        return self.context["usage"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_auth_method(self, user) -> str:
        info = getattr(self.context["request"]._request, "auth_info", None)
        return info.method if info else ""

    @extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(ALL_SCOPES)}})
    def get_scopes(self, user) -> list[str]:
        from accounts.permissions import granted_scopes

        return sorted(granted_scopes(self.context["request"]))


class ApiRequestSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = ApiRequest
        fields = [
            "id",
            "created_at",
            "user",
            "token",
            "token_label",
            "auth_method",
            "method",
            "path",
            "status",
            "duration_ms",
            "client_address",
            "user_agent",
        ]
        read_only_fields = fields


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, style={"input_type": "password"}, trim_whitespace=False)


class LoginResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    keyword = serializers.CharField()
    date_expired = serializers.DateTimeField()
