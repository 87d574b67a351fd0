"""tunnels.logfiles: rotation with N copies, the per-user cap, and tails read from the end."""

from __future__ import annotations

import os

import pytest

from tunnels import logfiles


@pytest.fixture
def logs(data_dir):
    path = data_dir / "logs"
    path.mkdir()
    return path


def write(path, size: int, fill: bytes = b"x", mtime: float | None = None):
    path.write_bytes(fill * size)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_a_log_under_its_limit_is_left_alone(logs):
    log = write(logs / "tunnel-a.log", 100)

    assert not logfiles.rotate(log, max_bytes=4096, keep=2)
    assert log.stat().st_size == 100 and not logfiles.rotation(log, 1).exists()


def test_rotation_keeps_the_newest_bytes_and_n_copies(logs):
    log = logs / "tunnel-a.log"
    for fill in (b"1", b"2", b"3", b"4"):
        write(log, 5000, fill)
        assert logfiles.rotate(log, max_bytes=4096, keep=2)

    assert log.stat().st_size == 0  # emptied in place (the writer keeps its descriptor)
    assert logfiles.rotation(log, 1).read_bytes() == b"4" * 4096  # the newest bytes, at most the limit
    assert logfiles.rotation(log, 2).read_bytes() == b"3" * 4096
    assert not logfiles.rotation(log, 3).exists()


def test_keep_zero_only_truncates(logs):
    log = write(logs / "tunnel-a.log", 5000)

    assert logfiles.rotate(log, max_bytes=4096, keep=0)
    assert log.stat().st_size == 0 and not logfiles.rotation(log, 1).exists()


def test_a_writer_with_o_append_continues_at_the_new_end(logs):
    log = logs / "tunnel-a.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # as processes.start opens it ("ab")
    try:
        os.write(fd, b"x" * 5000)
        logfiles.rotate(log, max_bytes=4096, keep=1)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)

    assert log.read_bytes() == b"after\n"  # no hole of NULs where the old content was


def test_the_user_cap_drops_the_oldest_rotations_first(logs):
    a, b = logs / "tunnel-a.log", logs / "tunnel-b.log"
    write(a, 1000)
    write(b, 1000)
    write(logfiles.rotation(a, 1), 3000, mtime=300)
    write(logfiles.rotation(a, 2), 3000, mtime=100)  # the oldest
    write(logfiles.rotation(b, 1), 3000, mtime=200)

    cut = logfiles.cap_user([a, b], cap=6000, keep=2)

    assert cut == {logfiles.rotation(a, 2), logfiles.rotation(b, 1)}
    assert logfiles.rotation(a, 1).exists() and a.stat().st_size == 1000 and b.stat().st_size == 1000


def test_the_user_cap_empties_the_largest_live_logs_when_rotations_are_not_enough(logs):
    a, b = write(logs / "tunnel-a.log", 9000), write(logs / "tunnel-b.log", 1000)

    cut = logfiles.cap_user([a, b], cap=5000, keep=2)

    assert cut == {a}
    assert a.stat().st_size == 0 and b.stat().st_size == 1000


def test_the_user_cap_tolerates_missing_files(logs):
    assert logfiles.cap_user([logs / "tunnel-gone.log"], cap=4096, keep=2) == set()
    logfiles.unlink(logs / "tunnel-gone.log")  # already gone: no error


def test_tail_lines_of_a_huge_sparse_file_reads_only_its_end(logs):
    log = logs / "tunnel-big.log"
    with open(log, "wb") as handle:
        handle.truncate(8 * 1024**3)  # 8 GiB of holes: reading it whole would take minutes
        handle.seek(0, os.SEEK_END)
        handle.write(b"".join(b"line %d\n" % n for n in range(1000)))

    assert logfiles.tail_lines(log, 3) == "line 997\nline 998\nline 999\n"
    assert logfiles.tail_bytes(log, 20) == b"line 998\nline 999\n"  # the cut first line is dropped


def test_tail_lines_stops_at_its_byte_limit_on_a_file_without_newlines(logs):
    log = write(logs / "tunnel-a.log", 300_000)

    assert len(logfiles.tail_lines(log, 5, max_bytes=100_000)) == 100_000


def test_tail_lines_returns_everything_of_a_short_file(logs):
    log = logs / "tunnel-a.log"
    log.write_bytes(b"one\ntwo\n")

    assert logfiles.tail_lines(log, 10) == "one\ntwo\n"
    assert logfiles.tail_lines(log, 1) == "two\n"
