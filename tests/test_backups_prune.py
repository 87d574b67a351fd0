"""Config backups are pruned: the newest BACKUP_KEEP per user and everything younger than
BACKUP_KEEP_DAYS stay (rows and files); after each snapshot and by ``manage.py prune_backups``."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from tunnels import backups, services
from tunnels.models import ConfigBackup

# Files go when the deletion commits: real transactions, not the test-wide one.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _small_limits(settings):
    settings.BACKUP_KEEP = 5
    settings.BACKUP_KEEP_DAYS = 30


def make_backups(user, count: int, days_old: float) -> list[ConfigBackup]:
    """``count`` real snapshots (rows and files), dated ``days_old`` days ago, oldest first."""
    made = []
    with override_settings(BACKUP_KEEP=10**6):  # keep them while they are made
        for n in range(count):
            backup = services.snapshot(user, f"backup {n}")
            stamp = timezone.now() - timedelta(days=days_old, seconds=count - n)
            ConfigBackup.objects.filter(pk=backup.pk).update(created_at=stamp)
            made.append(backup)
    return made


def path_of(backup: ConfigBackup):
    return backups.directory() / backup.file_name


def kept(user) -> set:
    return set(ConfigBackup.objects.filter(owner=user).values_list("pk", flat=True))


def test_old_backups_beyond_the_newest_n_are_deleted_with_their_files(owner):
    old = make_backups(owner, 8, days_old=40)

    latest = services.snapshot(owner, "a change")

    # The new one plus the 4 newest old ones make the 5 kept; the 4 oldest go, files too.
    assert kept(owner) == {latest.pk, *(b.pk for b in old[4:])}
    assert not any(path_of(b).exists() for b in old[:4])
    assert all(path_of(b).exists() for b in old[4:]) and path_of(latest).exists()


def test_backups_younger_than_the_limit_are_all_kept(owner):
    young = make_backups(owner, 8, days_old=29)

    services.snapshot(owner, "a change")

    assert len(kept(owner)) == 9
    assert all(path_of(b).exists() for b in young)


def test_young_backups_count_towards_the_newest_n(owner):
    old = make_backups(owner, 3, days_old=40)
    make_backups(owner, 6, days_old=1)

    services.snapshot(owner, "a change")

    assert not kept(owner) & {b.pk for b in old}  # 7 young ones already fill the newest 5


def test_other_users_backups_are_left_alone(owner, other):
    theirs = make_backups(other, 8, days_old=40)
    make_backups(owner, 8, days_old=40)

    services.snapshot(owner, "a change")

    assert kept(other) == {b.pk for b in theirs}
    assert len(kept(owner)) == 5


def test_a_backup_file_already_gone_is_no_error(owner):
    old = make_backups(owner, 8, days_old=40)
    path_of(old[0]).unlink()

    services.snapshot(owner, "a change")

    assert len(kept(owner)) == 5


def test_a_file_name_outside_the_backups_dir_is_never_deleted(owner, data_dir):
    outside = data_dir / "precious.txt"
    outside.write_text("keep me")
    old = make_backups(owner, 8, days_old=40)
    ConfigBackup.objects.filter(pk=old[0].pk).update(file_name="../precious.txt")

    services.snapshot(owner, "a change")

    assert outside.read_text() == "keep me"
    assert not ConfigBackup.objects.filter(pk=old[0].pk).exists()


def test_a_rolled_back_change_keeps_the_files(owner):
    old = make_backups(owner, 8, days_old=40)

    with pytest.raises(RuntimeError), transaction.atomic():
        services.snapshot(owner, "a change that fails")
        raise RuntimeError

    assert len(kept(owner)) == 8
    assert all(path_of(b).exists() for b in old)


def test_one_snapshot_prunes_a_bounded_batch_and_the_command_the_rest(owner, other, monkeypatch):
    monkeypatch.setattr(backups, "PRUNE_BATCH", 3)
    make_backups(owner, 12, days_old=40)
    make_backups(other, 7, days_old=40)

    services.snapshot(owner, "a change")
    assert len(kept(owner)) == 13 - 3

    out = StringIO()
    call_command("prune_backups", stdout=out)

    assert len(kept(owner)) == 5 and len(kept(other)) == 5
    assert "deleted 7 backups of 2 users" in out.getvalue()
    assert len(list(backups.directory().rglob("*.json"))) == 10
