"""The tunnel form. It only collects strings: the service layer validates and decides (one rule, one place)."""

from __future__ import annotations

from typing import Any

from django import forms

from tunnels.models import SshKey
from tunnels.models.tunnel import LOCAL_TO_REMOTE, REMOTE_TO_LOCAL
from tunnelsite.errors import ServiceError

DIRECTIONS = (
    (
        REMOTE_TO_LOCAL,
        "-L · local forward: a port on this tunnelsite host leads to a service the SSH server can reach",
    ),
    (
        LOCAL_TO_REMOTE,
        "-R · remote forward: a port on the SSH server leads to a service this tunnelsite host can reach",
    ),
)
# Sent to the service layer; the rest of the form is display only.
SERVICE_FIELDS = (
    "direction",
    "name",
    "remote_host",
    "remote_port",
    "local_port",
    "ssh_port",
    "interactive",
    "auto_restart",
)


class ServiceForm(forms.Form):
    """A form whose values a service function checks: its refusals are shown on the form. Labels without colons."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def add_service_error(self, error: ServiceError) -> None:
        """The service's refusal shown on the fields it names, or above the form."""
        placed = False
        for field, messages in (error.fields or {}).items():
            if field in self.fields:
                for message in messages:
                    self.add_error(field, message)
                placed = True
        if not placed:
            self.add_error(None, error.message)

    def add_serializer_errors(self, errors: dict) -> None:
        """An API serializer's refusals (the API's own checks, run for the form) on the fields they name."""
        for field, problems in errors.items():
            for message in problems if isinstance(problems, list) else [problems]:
                self.add_error(field if field in self.fields else None, str(message))


class TunnelForm(ServiceForm):
    direction = forms.ChoiceField(
        choices=DIRECTIONS,
        widget=forms.RadioSelect,
        initial=REMOTE_TO_LOCAL,
        help_text="Pick this first: it decides what the two port fields mean.",
    )
    name = forms.CharField(max_length=100, help_text="A name for you, e.g. <code>db-staging</code>.")
    remote_host = forms.CharField(
        max_length=255,
        label="SSH server",
        help_text="<code>user@host</code> (e.g. <code>deploy@ssh.example.com</code>): the server ssh logs in to.",
    )
    remote_port = forms.CharField(
        max_length=300,
        label="Remote port",
        help_text="-L: the target as the SSH server sees it, <code>port</code> or <code>host:port</code> "
        "(<code>5432</code>, <code>db.internal:5432</code>). -R: where the SSH server listens, "
        "<code>port</code> or <code>address:port</code>.",
    )
    local_port = forms.CharField(
        max_length=100,
        required=False,
        label="Local port",
        help_text="-L: where this host listens, <code>port</code> or <code>ip:port</code> (empty: the first free "
        "port of your range). -R: the target on this host, <code>port</code> or <code>ip:port</code>.",
    )
    ssh_port = forms.IntegerField(
        required=False, min_value=1, max_value=65535, label="SSH port", help_text="Empty: 22 (ssh's default)."
    )
    ssh_key = forms.ChoiceField(
        required=False, label="SSH key", help_text="One of your SSH keys; empty for none (your only key by default)."
    )
    interactive = forms.BooleanField(
        required=False,
        help_text="The SSH server asks for a password or a code: it starts only when you press Start, and you "
        "answer on its page; never restarted by itself.",
    )
    auto_restart = forms.BooleanField(
        required=False, initial=True, label="Restart when it drops", help_text="Bring it back when the connection ends."
    )

    def __init__(self, *args: Any, owner: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        keys = SshKey.objects.owned_by(owner).order_by("name").values_list("id", "name")
        self.fields["ssh_key"].choices = [("", "— none —"), *((str(pk), name) for pk, name in keys)]
        self.has_keys = len(self.fields["ssh_key"].choices) > 1
        if not owner.is_staff:  # staff may listen anywhere; everyone else needs their range to choose
            low, high = owner.port_range
            self.fields["local_port"].help_text += f" Your range for -L: {low}–{high}."

    def service_data(self, *, creating: bool) -> dict[str, Any]:
        """What the service layer gets: the form's values as the API would send them."""
        data = {field: self.cleaned_data.get(field) for field in SERVICE_FIELDS}
        if data["local_port"] in (None, "") and creating:
            del data["local_port"]  # the service assigns a free port (-L) or says it is required (-R)
        data["ssh_key"] = self.cleaned_data.get("ssh_key") or None
        return data


def initial_for(tunnel: Any) -> dict[str, Any]:
    initial = {field: getattr(tunnel, field) for field in SERVICE_FIELDS}
    initial["ssh_key"] = str(tunnel.ssh_key_id) if tunnel.ssh_key_id else ""
    return initial
