"""Process control: discovery by marker, identity by create time, stopping, logs."""

from __future__ import annotations

import shutil
import subprocess

import psutil
import pytest

from tunnels import processes


@pytest.fixture
def fake_autossh(tmp_path):
    """A copy of sleep named autossh: the scanner sees the name the kernel reports."""
    path = tmp_path / "bin" / "autossh"
    path.parent.mkdir()
    shutil.copy(shutil.which("sleep"), path)
    started = []

    def run(data_dir, uuid="11111111-2222-3333-4444-555555555555"):
        env = {
            "TUNNELSITE_TUNNEL": uuid,
            "TUNNELSITE_DATA_DIR": str(data_dir),
            "TUNNELSITE_TUNNEL_NODE": "n1",
            "TUNNELSITE_TUNNEL_GENERATION": "3",
        }
        proc, offset = processes.start([str(path), "30"], env, data_dir / "logs" / f"tunnel-{uuid}.log")
        started.append(proc)
        return proc

    yield run
    for proc in started:
        processes.stop_group(proc.pid, [(proc.pid, None)], proc)


def test_scan_finds_marked_processes_of_this_data_dir_only(fake_autossh, data_dir, tmp_path):
    mine = fake_autossh(data_dir)
    elsewhere = tmp_path / "other-data"
    elsewhere.mkdir()
    fake_autossh(elsewhere, uuid="99999999-2222-3333-4444-555555555555")

    found = processes.Scanner(data_dir).scan()

    assert list(found) == ["11111111-2222-3333-4444-555555555555"]
    (item,) = found["11111111-2222-3333-4444-555555555555"]
    assert (item.pid, item.pgid, item.node, item.generation, item.orphan) == (mine.pid, mine.pid, "n1", 3, False)
    assert item.create_time == psutil.Process(mine.pid).create_time()


def test_a_recycled_pid_is_not_taken_for_the_tunnel(fake_autossh, data_dir):
    proc = fake_autossh(data_dir)
    created = processes.create_time(proc.pid)

    assert processes.same_process(proc.pid, created)
    assert not processes.same_process(proc.pid, created - 100)  # same pid, another process


def test_stop_group_terminates_and_reaps(fake_autossh, data_dir):
    proc = fake_autossh(data_dir)

    assert processes.stop_group(proc.pid, [(proc.pid, processes.create_time(proc.pid))], proc)

    assert proc.returncode is not None  # reaped: no zombie left
    assert processes.Scanner(data_dir).scan() == {}


def test_process_runs_in_its_own_session_with_output_in_its_log(data_dir):
    log = data_dir / "logs" / "tunnel-x.log"
    proc, offset = processes.start(["sh", "-c", "echo hello; echo oops >&2"], {"PATH": "/usr/bin:/bin"}, log)
    proc.wait(timeout=5)

    assert log.read_text().startswith("=== ") and "starting: sh -c" in log.read_text()
    text, end = processes.read_log(log, offset)
    assert text == "hello\noops\n" and end == log.stat().st_size


def test_new_session_means_new_process_group(data_dir):
    proc, _ = processes.start(["sleep", "5"], {"PATH": "/usr/bin:/bin"}, data_dir / "logs" / "t.log")
    try:
        import os

        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    finally:
        processes.stop_group(proc.pid, [(proc.pid, None)], proc)


def test_read_log_restarts_after_truncation(data_dir):
    log = data_dir / "t.log"
    log.write_text("first line\n")
    text, offset = processes.read_log(log, 0)
    log.write_text("new\n")  # truncated by rotation, then written again

    assert processes.read_log(log, offset) == ("new\n", 4)
    assert processes.read_log(data_dir / "missing.log", 10) == ("", 0)


def test_listening_on_reports_only_the_owner_of_the_socket(data_dir):
    code = (
        "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
        "print(s.getsockname()[1], flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        port = int(proc.stdout.readline())
        assert processes.listening_on(proc.pid, port)
        assert not processes.listening_on(proc.pid, port + 1 if port < 65535 else port - 1)
    finally:
        processes.stop_group(proc.pid, [(proc.pid, None)], proc)
