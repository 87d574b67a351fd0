"""Process control: discovery by marker, identity by create time, stopping, logs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tunnels import processes
from tunnels.processes import sockets


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


def test_autossh_forking_its_ssh_is_one_tunnel_not_a_duplicate(data_dir, tmp_path):
    """Between fork and exec autossh's ssh is still named autossh: a scan then must count it as the
    child, not as a second process of the tunnel (the worker stopped it as a duplicate)."""
    path = tmp_path / "bin" / "autossh"
    path.parent.mkdir()
    shutil.copy(shutil.which("sh"), path)  # a shell named autossh whose child is a shell named autossh
    env = {"TUNNELSITE_TUNNEL": "11111111-2222-3333-4444-555555555555", "TUNNELSITE_DATA_DIR": str(data_dir)}
    child = f"{path} -c 'sleep 30; :'"
    proc, _ = processes.start([str(path), "-c", f"{child}; :"], env, data_dir / "logs" / "tunnel-x.log")
    try:
        wait = time.monotonic() + 5
        while not (kids := psutil.Process(proc.pid).children()) and time.monotonic() < wait:
            time.sleep(0.02)
        assert [kid.name() for kid in kids] == ["autossh"]

        (item,) = processes.Scanner(data_dir).scan()["11111111-2222-3333-4444-555555555555"]

        assert (item.pid, item.ssh_pids, item.orphan) == (proc.pid, [kids[0].pid], False)
    finally:
        processes.stop_group(proc.pid, [(proc.pid, None)], proc)


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


LISTENER = (
    "import socket,sys,time; s=socket.socket(int(sys.argv[1])); s.bind((sys.argv[2],0)); s.listen(); "
    "print(s.getsockname()[1], flush=True); time.sleep(30)"
)


@pytest.fixture
def listener():
    """Start a process that listens on a free port of ``host``; returns (process, port). Stopped by PID."""
    started = []

    def run(host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        proc = subprocess.Popen(
            [sys.executable, "-c", LISTENER, str(int(family)), host], stdout=subprocess.PIPE, start_new_session=True
        )
        started.append(proc)
        return proc, int(proc.stdout.readline())

    yield run
    for proc in started:
        processes.stop_group(proc.pid, [(proc.pid, None)], proc)


def test_listening_table_maps_a_port_to_the_socket_of_the_process_holding_it(listener):
    proc, port = listener()
    with socket.create_connection(("127.0.0.1", port)) as client:  # a connection is not a listener
        table = processes.listening_sockets()
        client_port = client.getsockname()[1]

    assert table[port] & processes.socket_inodes(proc.pid)
    assert client_port not in table
    assert processes.holds_listener([proc.pid], port, table)
    assert not processes.holds_listener([os.getpid()], port, table)  # another process: not the holder
    assert not processes.holds_listener([proc.pid], port, {})  # a table read before it listened


def test_listening_table_reads_ipv6_too(listener):
    if not socket.has_ipv6 or not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    proc, port = listener("::1")
    assert processes.holds_listener([proc.pid], port, processes.listening_sockets())


def test_the_netlink_table_is_the_proc_table(listener):
    """sock_diag (the fast path) and /proc/net/tcp (the fallback) agree, listeners of both families,
    and neither lists a connection."""
    procs = [listener()]
    if socket.has_ipv6 and _ipv6_loopback():
        procs.append(listener("::1"))
    with socket.create_connection(("127.0.0.1", procs[0][1])) as client:
        diag, text = sockets.diag_listeners(), sockets.proc_listeners()
        assert client.getsockname()[1] not in diag
    for proc, port in procs:  # (only our ports: other programs may open or close listeners meanwhile)
        assert diag[port] == text[port]
        assert diag[port] & processes.socket_inodes(proc.pid)


def test_children_lists_a_process_children_from_proc(listener):
    proc, _ = listener()
    assert processes.children(os.getpid()) is not None and proc.pid in processes.children(os.getpid())
    assert processes.children(proc.pid) == []
    assert processes.children(2**22 + 12345) == []  # no such process


def test_stop_groups_stops_many_with_one_grace_period(data_dir):
    procs = [
        processes.start(["sleep", "30"], {"PATH": "/usr/bin:/bin"}, data_dir / "logs" / f"t{i}.log")[0]
        for i in range(20)
    ]
    groups = [processes.Group(p.pid, [(p.pid, processes.create_time(p.pid))], p) for p in procs]

    assert processes.stop_groups(groups) == []
    assert all(p.returncode is not None for p in procs)  # every one reaped


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False
