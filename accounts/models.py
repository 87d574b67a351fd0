"""Users, their quotas, and every credential a user can present."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from tunnelsite.netrules import RuleErrors, parse_rules
from tunnelsite.owned import OwnedQuerySet

SCOPE_READ = "read"
SCOPE_OPERATE = "operate"
SCOPE_WRITE = "write"
SCOPE_ADMIN = "admin"
ALL_SCOPES = (SCOPE_READ, SCOPE_OPERATE, SCOPE_WRITE, SCOPE_ADMIN)
DEFAULT_SCOPES = [SCOPE_READ, SCOPE_OPERATE, SCOPE_WRITE]
# The network grants written as rule lines (tunnelsite.netrules), and whether each rule needs a port:
# an -R target is one service; an SSH destination rule may cover every port of a network.
GRANT_RULES = {"allowed_targets": True, "ssh_destinations": False}


def grant_problems(field: str, text: str) -> list[str]:
    """Every bad line of a grant field's rules ("line N: why"), or [] when all are readable."""
    try:
        parse_rules(text or "", port_required=GRANT_RULES[field])
    except RuleErrors as exc:
        return exc.problems
    return []


class User(AbstractUser):
    """A tunnelsite user; quotas live on the user so staff edit them in one place."""

    # null = "use TUNNELSITE_DEFAULT_MAX_TUNNELS", so changing the default
    # reaches every user who was never given a limit of their own.
    max_tunnels = models.PositiveIntegerField(null=True, blank=True)
    # The ports this user's -L tunnels may listen on. Both null = the server-wide
    # pool (TUNNELSITE_PORT_RANGE), so changing the pool reaches every user who
    # was never given a range of their own.
    local_port_min = models.PositiveIntegerField(null=True, blank=True)
    local_port_max = models.PositiveIntegerField(null=True, blank=True)
    allow_nonloopback_bind = models.BooleanField(
        default=False, help_text="-L tunnels may listen on addresses other than loopback."
    )
    allow_nonloopback_target = models.BooleanField(
        default=False, help_text="-R tunnels may connect to addresses beyond this host and its private networks."
    )
    allowed_targets = models.TextField(
        blank=True,
        help_text="Addresses on this host or its networks that -R tunnels may connect to, one per line: "
        "host:port, host:low-high, CIDR:port or CIDR:low-high.",
    )
    ssh_destinations = models.TextField(
        blank=True,
        help_text="SSH servers this user may reach although the server-wide policy denies them, one per line: "
        "an address or CIDR, optionally :port or :low-high.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(local_port_min__isnull=True) & models.Q(local_port_max__isnull=True))
                | (
                    models.Q(local_port_min__gte=1, local_port_max__lte=65535)
                    & models.Q(local_port_min__lte=models.F("local_port_max"))
                ),
                name="user_port_range_valid",
            )
        ]

    def clean(self) -> None:
        """The admin's form runs this: a grant is saved only when every rule line reads."""
        super().clean()
        errors = {field: problems for field in GRANT_RULES if (problems := grant_problems(field, getattr(self, field)))}
        if errors:
            raise ValidationError(errors)

    @property
    def port_range(self) -> tuple[int, int]:
        """The (low, high) ports this user's -L tunnels may listen on: their own range, else the pool."""
        if self.local_port_min is None or self.local_port_max is None:
            return settings.PORT_RANGE
        return (self.local_port_min, self.local_port_max)

    @property
    def effective_max_tunnels(self) -> int:
        if self.max_tunnels is None:
            return settings.DEFAULT_MAX_TUNNELS
        return self.max_tunnels


class ApiToken(models.Model):
    """A bearer token. Only a lookup id and an HMAC digest are stored."""

    owner_field = "user"

    KIND_PRIVATE = "private"
    KIND_TEMPORARY = "temporary"
    KIND_CHOICES = [(KIND_PRIVATE, "Private (permanent)"), (KIND_TEMPORARY, "Temporary")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    label = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default=KIND_PRIVATE)
    lookup = models.CharField(max_length=24, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    pepper_id = models.CharField(max_length=16, default="default", editable=False)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="token_user_created")]

    def __str__(self) -> str:
        return f"tsk_{self.lookup}… ({self.label or 'no label'})"

    @property
    def prefix(self) -> str:
        return f"tsk_{self.lookup}"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class AccessKey(models.Model):
    """A key id + secret pair for HTTP Signature auth (JumpServer style).

    The server needs the secret itself to verify HMACs, so it is stored
    encrypted with a key derived from server secrets, not hashed.
    """

    owner_field = "user"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_keys")
    label = models.CharField(max_length=100, blank=True)
    secret_encrypted = models.TextField(editable=False)
    scopes = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} ({self.label or 'no label'})"


class UsedSignature(models.Model):
    """Replay cache for HTTP Signatures: a signature may be used once."""

    signature_digest = models.CharField(max_length=64, unique=True)
    # Rows older than the Date window can be pruned; index serves that delete.
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.signature_digest[:12]


class ApiRequest(models.Model):
    """One row per API or compat request. Never the body or credentials."""

    owner_field = "user"

    created_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    token_label = models.CharField(max_length=100, blank=True)
    auth_method = models.CharField(max_length=20, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    status = models.PositiveSmallIntegerField()
    duration_ms = models.FloatField()
    client_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # requests/ lists a user's newest rows first; prunerequests deletes by age.
            models.Index(fields=["user", "-created_at"], name="apirequest_user_created"),
            models.Index(fields=["created_at"], name="apirequest_created"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status}"
