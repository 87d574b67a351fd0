"""The tunnel worker at scale: start-all, recovery, passes, stop-all and idle cost, beside the floor.

For each N of ``--sizes`` (default 100, 500, 1000) this starts, in one run:

* the floor: N bare ``ssh -N -L`` spawned at once to the same sshd (tests/sshd.py, loopback, with
  ``MaxStartups`` raised to 2N so sshd refuses none), timed until every forward carries traffic;
* tunnelsite: N stopped ``-L`` tunnels of a staff user, ``services.start_all`` (what the API's start-all
  calls), timed until every one is ``running`` and carries traffic; the first ``running``; spurious
  failures (failed or crashed sessions, restarts, failed/backoff seen, with sshd fine); worker CPU
  per started tunnel; steady worker CPU % and RSS; kill -9 of one autossh → a new process carrying
  traffic; full and idle reconcile pass (in-process ``Reconciler`` of the same node after a kill -9 of
  the worker, which adopts everything, then a fresh worker adopts again); stop-all → every process gone.

Then one tunnel, interleaved with bare ssh: start request → traffic, p50 ratio. With ``--postgres URL``,
failover (bench/scale_failover.py, two nodes on that server, kill -9 of one worker and its tunnels).

``--standin`` replaces autossh + ssh with the stand-in (bench/standin/, selected by TUNNELSITE_AUTOSSH;
no sshd, no floor) for sizes no real sshd serves here (default 5000, 10000), and adds memory per tunnel.

Usage:
  .venv/bin/python bench/scale.py [--sizes 100,500,1000] [--postgres postgres://postgres@127.0.0.1:5432/x]
  .venv/bin/python bench/scale.py --standin [--sizes 5000,10000]
Every process it starts is stopped at the end (worker, tunnels, floor ssh, sshd), by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from scale_tools import (
    PORT_HIGH,
    PORT_LOW,
    PY,
    Target,
    Worker,
    accepts,
    carries,
    floor,
    local_ports,
    raise_nofile,
    setup,
    start_sshd,
    wait_up,
)

# --- one size --------------------------------------------------------------------


@dataclass
class Figures:
    lines: list[str] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.lines.append(f"  {label:<48} {value}")
        print(self.lines[-1], flush=True)


def make_tunnels(owner_name: str, ports: list[int], ctx: Context):
    """A staff owner with one stopped -L tunnel per port (one replace-all, then stop-all: no worker runs yet)."""
    from django.contrib.auth import get_user_model

    from tunnels import services
    from tunnels.models import Tunnel

    owner = get_user_model().objects.create_user(owner_name, password="x", is_staff=True)
    items = [
        {"name": f"s{port}", "remote_host": ctx.destination, "ssh_port": ctx.ssh_port,
         "local_port": str(port), "remote_port": str(ctx.target.port)}
        for port in ports
    ]  # fmt: skip
    services.replace_all(owner, items)
    services.stop_all(Tunnel.objects.filter(owner=owner))
    return owner, dict(Tunnel.objects.filter(owner=owner).values_list("pk", "local_port"))


def spurious(owner) -> tuple[int, int, int]:
    """(sessions closed as failed/crashed/gone, tunnels with a restart, failures because another program
    held the port) of ``owner``'s tunnels. A port clash is counted apart: other programs on this machine
    (test suites) take ports of the same range, which is no fault of the worker."""
    from tunnels.models import ExitReason, Tunnel, TunnelSession

    bad = TunnelSession.objects.filter(
        owner=owner, exit_reason__in=(ExitReason.FAILED, ExitReason.CRASHED, ExitReason.GONE)
    )
    clashes = bad.filter(exit_detail__contains="address already in use").count()
    restarted = Tunnel.objects.filter(owner=owner, restart_count__gt=0).count()
    return bad.count() - clashes, restarted, clashes


def recover(owner, check, kills: int, timeout: float) -> list[float]:
    """kill -9 of one tunnel's autossh, ``kills`` times: seconds until a new process runs and carries traffic."""
    from tunnels.models import Status, Tunnel

    tunnels = list(Tunnel.objects.filter(owner=owner, status=Status.RUNNING, pid__isnull=False).order_by("pk"))
    picks = tunnels[:: max(1, len(tunnels) // kills)][:kills]
    times = []
    for tunnel in picks:
        old = tunnel.pid
        began = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while time.monotonic() - began < timeout:
            row = Tunnel.objects.filter(pk=tunnel.pk).values_list("status", "pid").first()
            if row[0] == Status.RUNNING and row[1] not in (None, old) and check(int(tunnel.local_port)):
                times.append(time.monotonic() - began)
                break
            time.sleep(0.005)
        else:
            print(f"  (tunnel {tunnel.name} did not recover within {timeout:.0f} s)")
    return times


def passes(worker: Worker, full: int = 20, idle: int = 50, budget: float = 30.0):
    """kill -9 of the worker; an in-process Reconciler of its node adopts everything (first pass), then
    ``full`` full passes and ``idle`` passes with nothing changed (each kind stops early once it has taken
    ``budget`` seconds, after at least 3); a fresh worker takes over again. Returns (adopt, fulls, idles)."""
    from django.db import close_old_connections

    from tunnels.reconciler import Reconciler

    worker.kill9()
    reconciler = Reconciler(worker.node)
    began = time.perf_counter()
    reconciler.reconcile_once(full=True)
    adopt = time.perf_counter() - began
    fulls = timed(lambda: reconciler.reconcile_once(full=True), full, budget)
    idles = timed(reconciler.reconcile_once, idle, budget)
    reconciler.preflights.shutdown()
    close_old_connections()
    worker.start().settle()
    return adopt, fulls, idles


def report_passes(worker: Worker, out: Figures, budget: float) -> None:
    try:
        adopt, fulls, idles = passes(worker, budget=budget)
    except Exception as exc:  # the worker's internals changed: the other rows still count
        out.add("reconcile pass", f"not measured: {exc.__class__.__name__}: {exc}")
        if worker.proc is None or worker.proc.poll() is not None:
            worker.start().settle()
        return
    out.add("reconcile pass: adopt all (fresh worker)", f"{adopt * 1000:.0f} ms")
    out.add(
        f"reconcile pass: full p50 ({len(fulls)}x) / idle p50 ({len(idles)}x)",
        f"{statistics.median(fulls) * 1000:.1f} ms / {statistics.median(idles) * 1000:.2f} ms",
    )


def timed(call, count: int, budget: float) -> list[float]:
    times: list[float] = []
    deadline = time.monotonic() + budget
    while len(times) < count and (len(times) < 3 or time.monotonic() < deadline):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def stop_everything(owner, timeout: float) -> float | None:
    """services.stop_all → every tunnel ``stopped`` and every process of them gone (seconds)."""
    from tunnels import processes, services
    from tunnels.models import Status, Tunnel

    found = processes.Scanner().scan().values()
    pids = [pid for items in found for item in items for pid in (item.pid, *item.ssh_pids)]
    began = time.monotonic()
    services.stop_all(Tunnel.objects.filter(owner=owner))
    while time.monotonic() - began < timeout:
        pids = [pid for pid in pids if _alive(pid)]
        if not pids and not Tunnel.objects.filter(owner=owner).exclude(status=Status.STOPPED).exists():
            return time.monotonic() - began
        time.sleep(0.02)
    return None


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a zombie has exited; its parent just has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def tunnel_memory(sample: int = 50) -> tuple[float, float]:
    """Mean USS and RSS (MB) of an autossh + ssh pair, over ``sample`` live tunnels."""
    import psutil

    from tunnels import processes

    uss, rss = [], []
    for items in list(processes.Scanner().scan().values())[:sample]:
        for item in items:
            try:
                group = [psutil.Process(item.pid), *(psutil.Process(p) for p in item.ssh_pids)]
                uss.append(sum(p.memory_full_info().uss for p in group))
                rss.append(sum(p.memory_info().rss for p in group))
            except psutil.Error:
                continue
    return statistics.mean(uss) / 2**20, statistics.mean(rss) / 2**20


class MachineCpu:
    """The whole machine's CPU over a phase: busy CPU-seconds and the share of the cores they took."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.start = psutil.cpu_times()
        self.began = time.monotonic()
        self.own_start = sum(psutil.Process().cpu_times()[:2])

    def stop(self) -> None:
        end = self._psutil.cpu_times()
        self.own = sum(self._psutil.Process().cpu_times()[:2]) - self.own_start  # this script's polling
        self.wall = time.monotonic() - self.began
        spent = {name: getattr(end, name) - getattr(self.start, name) for name in end._fields}
        idle = spent["idle"] + spent.get("iowait", 0.0)
        self.steal = spent.get("steal", 0.0)  # taken by the hypervisor: this VM's neighbours
        guest = spent.get("guest", 0.0) + spent.get("guest_nice", 0.0)  # (already counted in user)
        self.busy = sum(spent.values()) - idle - self.steal - guest
        self.share = self.busy / max(1e-9, self.busy + idle + self.steal)

    def __str__(self) -> str:
        return (
            f"{self.busy:.1f} CPU-s ({self.share * 100:.0f} % of {os.cpu_count()} cores, "
            f"bench {self.own:.1f} s, steal {self.steal:.1f} s)"
        )


def one_size(n: int, ctx: Context) -> None:
    import psutil

    print(f"\nN = {n} {'stand-in' if ctx.standin else '-L'} tunnels", flush=True)
    out = Figures()
    ports = local_ports(n if ctx.standin else 2 * n)
    mine, floor_ports = ports[:n], ports[n:]
    owner, by_pk = make_tunnels(f"scale{n}", mine, ctx)
    ports_of = {pk: int(port) for pk, port in by_pk.items()}
    worker = Worker(ctx.env, ctx.tmp / f"worker-{n}.log").start()
    ctx.workers.append(worker)
    try:
        worker.settle()
        rss_before = psutil.Process(worker.proc.pid).memory_info().rss
        floor_s = floor_busy = None
        if not ctx.standin:
            floor_busy = MachineCpu()
            floor_s, said = floor(ctx.server, floor_ports, ctx.target, ctx.tmp, ctx.timeout)
            floor_busy.stop()
            out.add("floor: bare ssh -N -L at once → traffic", said)
        cpu0 = worker.cpu_seconds()
        busy = MachineCpu()
        from tunnels import services
        from tunnels.models import Tunnel

        began = time.monotonic()
        services.start_all(Tunnel.objects.filter(owner=owner))
        up = wait_up(owner, ports_of, began, ctx.check, ctx.timeout)
        cpu = worker.cpu_seconds() - cpu0
        busy.stop()
        if len(up.done) == n:
            total = max(up.done.values())
            ratio = f"   ratio {total / floor_s:.2f} (goal <= 1.15)" if floor_s else ""
            out.add("start-all → every tunnel running + traffic", f"{total:.2f} s{ratio}")
        else:
            out.add("start-all → every tunnel running + traffic", f"only {len(up.done)}/{n} in {up.elapsed:.0f} s")
        first = f"{up.first_running:.2f} s" if up.first_running is not None else "none"
        out.add("first tunnel running after the request", f"{first} (goal < 1 s)")
        out.add("worker CPU per started tunnel", f"{cpu / n * 1000:.1f} ms ({cpu:.1f} s over start-all)")
        phases = ([f"floor {floor_busy}"] if floor_busy else []) + [f"start-all {busy}"]
        out.add("machine CPU (all processes), busy", ";  ".join(phases))
        time.sleep(2)
        proc = psutil.Process(worker.proc.pid)
        proc.cpu_percent(None)
        time.sleep(ctx.idle)
        steady = proc.cpu_percent(None)
        rss = proc.memory_info().rss
        failed, restarted, clashes = spurious(owner)
        clashed = f"; {clashes} port taken by another program" if clashes else ""
        out.add(
            "spurious failures",
            f"{failed} failed/crashed sessions, {restarted} restarted, {len(up.troubled)} seen failed/backoff"
            f" (goal 0){clashed}",
        )
        out.add(
            f"steady worker CPU over {ctx.idle:.0f} s, RSS",
            f"{steady:.2f} %, {rss / 2**20:.1f} MB (goals < 2 %, < 100 MB)",
        )
        pair_uss, pair_rss = tunnel_memory()
        out.add("memory per tunnel: worker RSS growth", f"{(rss - rss_before) / n / 1024:.1f} KB")
        what = "stand-in pair" if ctx.standin else "autossh + ssh"
        out.add(f"memory per tunnel: {what}", f"USS {pair_uss * 1024:.0f} KB, RSS {pair_rss * 1024:.0f} KB")
        recovered = recover(owner, ctx.check, ctx.kills, ctx.timeout)
        if recovered:
            out.add(
                f"kill -9 autossh → traffic again ({len(recovered)}x)",
                f"p50 {statistics.median(recovered) * 1000:.0f} ms  max {max(recovered) * 1000:.0f} ms"
                " (goal p50 < 500 ms)",
            )
        report_passes(worker, out, ctx.pass_budget)
        stopped = stop_everything(owner, ctx.timeout)
        goal = " (goal < 3 s at 1000)" if n >= 1000 else ""
        out.add("stop-all → every process gone", f"{stopped:.2f} s{goal}" if stopped else "not within the timeout")
    finally:
        worker.cleanup()
        from tests.worker_fixtures import kill_tunnel_processes

        kill_tunnel_processes(Path(ctx.env["TUNNELSITE_DATA_DIR"]))
        from tunnels import services

        services.replace_all(owner, [])


# --- one tunnel, interleaved -------------------------------------------------------


def single(ctx: Context, rounds: int) -> None:
    """Bare ssh until traffic and tunnelsite's start request until traffic, alternating."""
    from tunnels import services
    from tunnels.models import Status, Tunnel

    port, floor_port = local_ports(2)
    owner, by_pk = make_tunnels("single", [port], ctx)
    tunnel = Tunnel.objects.get(pk=next(iter(by_pk)))
    worker = Worker(ctx.env, ctx.tmp / "worker-single.log").start()
    ctx.workers.append(worker)
    bare, ours = [], []
    try:
        worker.settle()
        for _ in range(rounds):
            seconds, _said = floor(ctx.server, [floor_port], ctx.target, ctx.tmp, 30)
            bare.append(seconds or float("inf"))
            began = time.monotonic()
            services.request_start(tunnel)
            up = wait_up(owner, {tunnel.pk: port}, began, carries, 30)
            ours.append(up.done.get(tunnel.pk, float("inf")))
            services.request_stop(tunnel)
            while Tunnel.objects.filter(pk=tunnel.pk).exclude(status=Status.STOPPED).exists() or accepts(port):
                time.sleep(0.02)
    finally:
        worker.cleanup()
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"\none tunnel, {rounds} rounds interleaved: request → traffic")
    print(f"  {'bare ssh -N -L':<48} p50 {b * 1000:.0f} ms")
    print(f"  {'tunnelsite request_start':<48} p50 {o * 1000:.0f} ms   ratio {o / b:.2f} (goal <= 1.15)")


# --- main ----------------------------------------------------------------------------


@dataclass
class Context:
    tmp: Path
    env: dict[str, str]
    standin: bool
    target: Target
    server: object | None
    destination: str
    ssh_port: int
    check: object
    timeout: float
    idle: float
    kills: int
    pass_budget: float
    workers: list[Worker] = field(default_factory=list)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 100,500,1000; stand-in 5000,10000)")
    parser.add_argument("--standin", action="store_true", help="stand-in tunnels instead of autossh + ssh (no sshd)")
    parser.add_argument("--single-rounds", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--pass-budget", type=float, default=30.0, help="seconds per kind of pass measured")
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase (start-all, stop-all...)")
    parser.add_argument("--postgres", metavar="URL", help="run the failover part on a fresh database of this name")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE", help="for the worker only")
    args = parser.parse_args()
    default = "5000,10000" if args.standin else "100,500,1000"
    args.sizes = [int(size) for size in (args.sizes or default).split(",")]
    return args


def main() -> None:
    args = arguments()
    nofile = raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    target = Target()
    server = None
    extra: dict[str, str] = {}
    ctx = None
    try:
        if args.standin:
            from standin.build import build

            extra["TUNNELSITE_AUTOSSH"] = str(build(tmp / "standin"))
            ssh_port = 22
        else:
            server = start_sshd(tmp / "sshd", max_startups=max(200, 2 * max(args.sizes)))
            extra["TUNNELSITE_SSH_IDENTITY"] = str(server.client_key)
            ssh_port = server.port
        env = setup(tmp, extra)
        env.update(item.split("=", 1) for item in args.worker_env)
        destination = server.destination if server is not None else "bench@127.0.0.1"
        check = accepts if args.standin else carries
        ctx = Context(tmp, env, args.standin, target, server, destination, ssh_port,
                      check, args.timeout, args.idle, args.kills, args.pass_budget)  # fmt: skip
        describe(args, ctx, nofile)
        for n in args.sizes:
            try:
                one_size(n, ctx)
            except Exception as exc:  # one size going wrong must not cost the figures of the others
                print(f"  N = {n} stopped: {exc.__class__.__name__}: {exc}", flush=True)
        if not args.standin and args.single_rounds:
            single(ctx, args.single_rounds)
        if args.postgres and not args.standin:
            failover = Path(__file__).parent / "scale_failover.py"
            subprocess.run([PY, str(failover), "--postgres", args.postgres], check=False)
    finally:
        target.close()
        for worker in ctx.workers if ctx else []:
            worker.cleanup()
        cleanup(tmp, server)


def describe(args, ctx: Context, nofile: int) -> None:
    from django.conf import settings

    kind = "stand-in (bench/standin/autossh.c, no sshd)" if ctx.standin else "autossh + ssh to sshd on loopback"
    print(f"tunnel worker at scale, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores")
    print(f"  tunnels: {kind}; SQLite; ulimit -n {nofile}; ports {PORT_LOW}-{PORT_HIGH}")
    if ctx.server is not None:
        print(f"  sshd MaxStartups {max(200, 2 * max(args.sizes))} (so the floor's ssh are never refused)")
    if ctx.standin:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        print(f"  limits here: pid_max {pid_max} (2 processes per tunnel), {PORT_HIGH - PORT_LOW + 1} local ports")
    knobs = {k: v for k, v in ctx.env.items() if k.startswith("TUNNELSITE_WORKER")}
    lease, interval = settings.WORKER_LEASE_SECONDS, settings.WORKER_INTERVAL
    print(f"  worker: lease {lease} s, interval {interval} s, env {knobs or 'defaults'}")


def cleanup(tmp: Path, server) -> None:
    from tests.worker_fixtures import kill_tunnel_processes

    if (tmp / "data").exists() and "django" in sys.modules:
        kill_tunnel_processes(tmp / "data")
        from tunnels.agent import kill_agents

        kill_agents(tmp / "data")
    if server is not None:
        from tests import sshd as sshd_mod

        sshd_mod.stop_sshd(server)


if __name__ == "__main__":
    main()
