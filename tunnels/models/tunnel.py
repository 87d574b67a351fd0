"""Tunnels: configuration, desired state and observed state."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tunnels import logfiles
from tunnels.hashing import compat_hash
from tunnelsite.owned import OwnedQuerySet

REMOTE_TO_LOCAL = "remote_to_local"
LOCAL_TO_REMOTE = "local_to_remote"
DIRECTION_CHOICES = [(REMOTE_TO_LOCAL, "remote → local (ssh -L)"), (LOCAL_TO_REMOTE, "local → remote (ssh -R)")]
DIRECTIONS = (REMOTE_TO_LOCAL, LOCAL_TO_REMOTE)


class Desired(models.TextChoices):
    RUNNING = "running", "running"
    STOPPED = "stopped", "stopped"


class Status(models.TextChoices):
    STOPPED = "stopped", "stopped"
    STARTING = "starting", "starting"
    RUNNING = "running", "running"
    BACKOFF = "backoff", "backoff"
    FAILED = "failed", "failed"
    # An interactive tunnel whose ssh master ended: starting it again needs a person to log in.
    NEEDS_AUTH = "needs_auth", "needs authentication"


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:15001``, never ``::1:15001``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_address(direction: str, local_port: str, remote_port: str, remote_host: str) -> str:
    """Where a tunnel's entry point listens: ``127.0.0.1:18080`` (ssh -L) or ``host:port`` remote side (ssh -R).

    A function of the configuration columns, so lists built from ``values()`` rows share it.
    """
    from tunnels.validation import FieldError, split_local, split_remote

    try:
        if direction == REMOTE_TO_LOCAL:
            return host_port(*split_local(local_port))
        host, port = split_remote(remote_port, default_host="localhost")
    except FieldError:
        # A row saved before a validation rule tightened: show it as configured
        # rather than fail every list that contains it (the worker refuses to run it).
        return local_port if direction == REMOTE_TO_LOCAL else remote_port
    # -R: the address ssh asks the server to listen on ("localhost" unless given). Never the server's
    # name or 127.0.0.1: its sshd may bind "localhost" on one loopback family only and not say which.
    return host_port(host, port)


def claimed_port(direction: str, local_port: str) -> int | None:
    """The port a tunnel holds on this host: an -L tunnel's listen port, whatever its address
    (127.0.0.1:P, [::1]:P, 0.0.0.0:P and [::]:P all hold P); None for -R, which listens elsewhere."""
    from tunnels.validation import FieldError, split_local

    if direction != REMOTE_TO_LOCAL:
        return None
    try:
        return split_local(local_port)[1]
    except FieldError:
        return None


class TunnelQuerySet(OwnedQuerySet):
    pass


class Tunnel(models.Model):
    # Configuration (the six compat fields hash over these).
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tunnels")
    name = models.CharField(max_length=100, default="unnamed")
    remote_host = models.CharField(max_length=255)
    remote_port = models.CharField(max_length=300)
    local_port = models.CharField(max_length=100)
    direction = models.CharField(max_length=20, choices=DIRECTION_CHOICES, default=REMOTE_TO_LOCAL)
    interactive = models.BooleanField(default=False)
    ssh_port = models.PositiveIntegerField(null=True, blank=True, help_text="SSH server port; empty = ssh default")
    auto_restart = models.BooleanField(
        default=True, help_text="Bring the tunnel back when its process dies (sshreach 'allow clientless')."
    )
    # The owner's key the tunnel authenticates with. PROTECT: a key in use cannot be deleted.
    ssh_key = models.ForeignKey(
        "tunnels.SshKey", null=True, blank=True, on_delete=models.PROTECT, related_name="tunnels"
    )
    hash = models.CharField(max_length=32, editable=False, db_index=True)
    # The port this tunnel holds on this host (claimed_port); unique across all users, so
    # the database decides who gets a port when two ask at once. Set by the service layer.
    listen_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # Bumped on every configuration change; the worker restarts a process
    # whose running_generation is behind.
    generation = models.PositiveBigIntegerField(default=1, editable=False)

    # Desired state, written by the service layer only.
    desired_state = models.CharField(max_length=10, choices=Desired.choices, default=Desired.STOPPED)
    desired_changed_at = models.DateTimeField(default=timezone.now)
    desired_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    desired_by_token = models.ForeignKey(
        "accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Observed state, written by the worker only.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.STOPPED)
    status_changed_at = models.DateTimeField(default=timezone.now)
    pid = models.PositiveIntegerField(null=True, blank=True)
    process_create_time = models.FloatField(null=True, blank=True)
    running_generation = models.PositiveBigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    restart_count = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    backoff_until = models.DateTimeField(null=True, blank=True)
    node = models.CharField(max_length=100, blank=True, help_text="Worker node that runs this tunnel")

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    owner_field = "owner"
    objects = TunnelQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "hash"], name="tunnel_unique_config_per_owner"),
            models.UniqueConstraint(fields=["listen_port"], name="tunnel_listen_port_claimed"),
            models.CheckConstraint(condition=Q(direction__in=DIRECTIONS), name="tunnel_direction_valid"),
            models.CheckConstraint(condition=Q(desired_state__in=Desired.values), name="tunnel_desired_valid"),
            models.CheckConstraint(condition=Q(status__in=Status.values), name="tunnel_status_valid"),
            models.CheckConstraint(condition=~Q(name=""), name="tunnel_name_not_empty"),
        ]
        indexes = [
            # The worker's every pass: tunnels assigned to a node, by desired state.
            models.Index(fields=["node", "desired_state"], name="tunnel_node_desired"),
            # Compat hash-prefix lookups are per owner.
            models.Index(fields=["owner", "hash"], name="tunnel_owner_hash"),
            # API list pages: one user's tunnels in the default order, read without a sort.
            models.Index(fields=["owner", "created_at", "id"], name="tunnel_owner_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.hash[:8]})"

    def save(self, *args, **kwargs) -> None:
        self.hash = self.compute_hash()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "hash" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "hash"]
        super().save(*args, **kwargs)

    def compute_hash(self) -> str:
        return compat_hash(
            self.name, self.remote_host, self.remote_port, self.local_port, self.direction, self.interactive
        )

    @property
    def log_path(self):
        """The tunnel's log file (tunnels.logfiles)."""
        return logfiles.path_for(self.uuid)

    @property
    def is_forward_local(self) -> bool:
        """True for ssh -L (the listening socket is on this machine)."""
        return self.direction == REMOTE_TO_LOCAL

    @property
    def holds_its_port(self) -> bool:
        """False for an -L tunnel left without its port (it lost it to an older tunnel): it may not run."""
        return self.direction != REMOTE_TO_LOCAL or self.listen_port is not None

    @property
    def listen(self) -> str:
        return listen_address(self.direction, self.local_port, self.remote_port, self.remote_host)

    def compat_dict(self) -> dict:
        return {
            "name": self.name,
            "remote_host": self.remote_host,
            "remote_port": self.remote_port,
            "local_port": self.local_port,
            "direction": self.direction,
            "interactive": self.interactive,
            "hash": self.hash,
        }

    def backup_dict(self) -> dict:
        """What a backup keeps: the compat fields plus tunnelsite's own, so a restore loses nothing."""
        return {
            **self.compat_dict(),
            "ssh_port": self.ssh_port,
            "auto_restart": self.auto_restart,
            "ssh_key": str(self.ssh_key_id) if self.ssh_key_id else None,
        }
