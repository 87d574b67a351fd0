"""Ports are owned: every -L tunnel claims its listen port in a column unique across all users.

Existing rows are filled in creation order. Where two -L tunnels already share a port
(which made one of them fail or, worse, take over the other's port on a restart), the
older keeps the port; the later one keeps its configuration but holds no port, is set
to stopped and says why in last_error, until its owner changes local_port.
"""

from django.db import migrations, models
from django.utils import timezone

REMOTE_TO_LOCAL = "remote_to_local"
LOST_PORT = (
    "local_port {port} is also used by an older tunnel on this host, which keeps it: this tunnel "
    "is stopped until you change its local_port"
)


def _port(local_port: str) -> int | None:
    # "P", "ipv4:P" or "[ipv6]:P" (validated when saved); anything else holds no port.
    text = local_port.rpartition(":")[2]
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def claim_ports(apps, schema_editor) -> None:
    Tunnel = apps.get_model("tunnels", "Tunnel")
    taken: set[int] = set()
    rows = Tunnel.objects.filter(direction=REMOTE_TO_LOCAL).order_by("created_at", "id")
    for pk, local_port in rows.values_list("pk", "local_port").iterator():
        port = _port(local_port)
        if port is None:
            continue
        if port not in taken:
            taken.add(port)
            Tunnel.objects.filter(pk=pk).update(listen_port=port)
        else:
            now = timezone.now()
            Tunnel.objects.filter(pk=pk).update(
                desired_state="stopped", desired_changed_at=now, last_error=LOST_PORT.format(port=port)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("tunnels", "0003_identities_and_preflight"),
    ]

    operations = [
        migrations.AddField(
            model_name="tunnel",
            name="listen_port",
            field=models.PositiveIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(claim_ports, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="tunnel",
            constraint=models.UniqueConstraint(fields=("listen_port",), name="tunnel_listen_port_claimed"),
        ),
    ]
