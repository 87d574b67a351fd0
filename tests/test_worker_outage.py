"""The outage probe (tunnels.worker.outage.connects) against real sockets on loopback."""

from __future__ import annotations

import contextlib
import os
import resource
import socket

import pytest

from tunnels.worker.outage import connects


@pytest.fixture
def listener():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_a_listening_port_answers_and_a_closed_one_does_not(listener):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # bound, never listening: refused
    assert connects("127.0.0.1", listener)
    assert not connects("127.0.0.1", closed)


def test_the_probe_works_with_more_than_1024_open_files(listener):
    """A worker with many tunnels holds two pidfds per tunnel: select() fails past fd 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-files limit ({hard}) is below what this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        assert connects("127.0.0.1", listener)
    finally:
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
