"""Who a user's tunnels are on the wire: their SSH keys and the host keys they trust."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tunnelsite.owned import OwnedQuerySet


class SshKey(models.Model):
    """A user's SSH key pair. Only the public half ever leaves the server.

    The private key (OpenSSH format) is kept encrypted under a key derived
    from the server's secrets; the worker decrypts it into its own ssh-agent
    and nowhere else.
    """

    owner_field = "owner"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=100)
    algorithm = models.CharField(max_length=40, help_text="ssh key type, e.g. ssh-ed25519 or ssh-rsa")
    bits = models.PositiveIntegerField(default=0)
    public_key = models.TextField(help_text="OpenSSH public key line: type, base64 blob, comment")
    fingerprint = models.CharField(max_length=80, help_text="SHA256 fingerprint as ssh-keygen -l prints it")
    comment = models.CharField(max_length=200, blank=True)
    private_key_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="sshkey_unique_name_per_owner"),
            models.UniqueConstraint(fields=["owner", "fingerprint"], name="sshkey_unique_key_per_owner"),
            models.CheckConstraint(condition=~Q(name=""), name="sshkey_name_not_empty"),
        ]
        indexes = [models.Index(fields=["owner", "created_at"], name="sshkey_owner_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class HostKeyState(models.TextChoices):
    TRUSTED = "trusted", "trusted"
    CHANGED = "changed", "changed (not trusted until accepted)"


class KnownHost(models.Model):
    """A host key one owner trusts for one SSH server (host + port + key type).

    Recorded on the first successful connection (trust on first use) or
    pasted from ``ssh-keyscan``. When the server later presents another key,
    the row turns ``changed`` with the offered key beside the trusted one and
    the owner's tunnels to that server stay down until the owner accepts it.
    """

    owner_field = "owner"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="known_hosts")
    host = models.CharField(max_length=255, help_text="host name or address as ssh connects to it")
    port = models.PositiveIntegerField(default=22)
    key_type = models.CharField(max_length=40)
    key = models.TextField(help_text="base64 public key")
    fingerprint = models.CharField(max_length=80)
    state = models.CharField(max_length=10, choices=HostKeyState.choices, default=HostKeyState.TRUSTED)
    offered_key = models.TextField(blank=True, help_text="the key the server presented instead (state changed)")
    offered_fingerprint = models.CharField(max_length=80, blank=True)
    source = models.CharField(max_length=20, default="tofu", help_text="tofu (first connection) or keyscan (pasted)")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    changed_at = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["host", "port", "key_type"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "host", "port", "key_type"], name="knownhost_unique"),
            models.CheckConstraint(condition=Q(state__in=HostKeyState.values), name="knownhost_state_valid"),
            models.CheckConstraint(condition=Q(port__gte=1, port__lte=65535), name="knownhost_port_valid"),
        ]
        indexes = [
            # The worker writes one owner's known_hosts file from these rows.
            models.Index(fields=["owner", "host", "port"], name="knownhost_owner_host"),
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.port} {self.key_type} {self.fingerprint} ({self.state})"
