"""Network grants: the server-wide port pool, -R targets and SSH destinations.

Existing users keep what they could do: the old default range 1024-65535
becomes "the pool" (null), a custom range stays, and a user who could bind
beyond loopback (which used to cover targets too) keeps both grants.
"""

from django.db import migrations, models

OLD_DEFAULT_RANGE = (1024, 65535)


def forwards(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    User.objects.filter(local_port_min=OLD_DEFAULT_RANGE[0], local_port_max=OLD_DEFAULT_RANGE[1]).update(
        local_port_min=None, local_port_max=None
    )
    User.objects.filter(allow_nonloopback_bind=True).update(allow_nonloopback_target=True)


def backwards(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    User.objects.filter(local_port_min__isnull=True).update(
        local_port_min=OLD_DEFAULT_RANGE[0], local_port_max=OLD_DEFAULT_RANGE[1]
    )


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_shared_cache_table'),
        ('auth', '0012_alter_user_first_name_max_length'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='user',
            name='user_port_range_valid',
        ),
        migrations.AddField(
            model_name='user',
            name='allow_nonloopback_target',
            field=models.BooleanField(default=False, help_text='-R tunnels may connect to addresses beyond this host and its private networks.'),
        ),
        migrations.AddField(
            model_name='user',
            name='allowed_targets',
            field=models.TextField(blank=True, help_text='Addresses on this host or its networks that -R tunnels may connect to, one per line: host:port, host:low-high, CIDR:port or CIDR:low-high.'),
        ),
        migrations.AddField(
            model_name='user',
            name='ssh_destinations',
            field=models.TextField(blank=True, help_text='SSH servers this user may reach although the server-wide policy denies them, one per line: an address or CIDR, optionally :port or :low-high.'),
        ),
        migrations.AlterField(
            model_name='user',
            name='allow_nonloopback_bind',
            field=models.BooleanField(default=False, help_text='-L tunnels may listen on addresses other than loopback.'),
        ),
        migrations.AlterField(
            model_name='user',
            name='local_port_max',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='user',
            name='local_port_min',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.AddConstraint(
            model_name='user',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('local_port_min__isnull', True), ('local_port_max__isnull', True)), models.Q(('local_port_max__lte', 65535), ('local_port_min__gte', 1), ('local_port_min__lte', models.F('local_port_max'))), _connector='OR'), name='user_port_range_valid'),
        ),
    ]
