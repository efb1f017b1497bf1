"""The cross-library benchmark: ``python -m benchmarks.harness`` (or ``bash ci/bench.sh``,
which installs the peers first).

Every system runs as a server process and a client process on loopback,
following the contract in ``benchmarks/peers/README.md``.  For each system
and workload the client runs ``--runs`` times (default 3; W1 and W3:
``--paired-runs``, default 9, of 0.4 s); a cell is the
median with the spread (min-max) beside it, and every figure is also given
as a ratio to the floor measured in the same run; all servers stay up and
the runs are interleaved across systems, so that ratios compare figures
taken seconds apart, not minutes (shared cores drift).  On the
latency-bound workloads (W1, W3) each run of a system is also paired with
a run of its floor, taken right before it or (every other pair) right
after, and "vs floor" is the median of those per-pair ratios, with
the p50 difference to the floor beside it (median of per-pair
differences).  The server's own CPU time (``/proc/PID/stat``) is read
around each client run and divided by the calls it served.

Workloads: W1 ``seq``, W2 ``pipelined`` (64 in flight), W3 ``payload``
(64 KiB echo), W4 ``fanin`` (8 connections x 16 in flight), and W5: 1,000
idle connections held open, then W1 on one more (server RSS per connection
and the W1 slowdown, from idle and loaded runs taken in alternation).

Results: a table on stdout, ``benchmarks/results/results.json`` and
``benchmarks/results/chart.png`` (when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
GO_BIN = os.path.join(ROOT, "benchmarks", "go", "bin")
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

WORKLOADS = ("seq", "pipelined", "payload", "fanin")
TITLES = {
    "seq": "W1 sequential",
    "pipelined": "W2 pipelined (64 in flight)",
    "payload": "W3 payload (64 KiB echo)",
    "fanin": "W4 fan-in (8 conns x 16 in flight)",
}
IDLE_CONNECTIONS = 1000
#: workloads where every run of a system follows a run of its floor, and the
#: ratio and p50 difference are taken per pair (latency-bound: the ones that
#: drift most on shared cores)
PAIRED = ("seq", "payload")


def _py(module: str, *args: str) -> List[str]:
    return [PY, "-m", module, *args]


class Server:
    """A named server command and the clients measured against it."""

    def __init__(self, key: str, argv: List[str], env: Optional[Dict[str, str]] = None, speaks_fastrpc: bool = False):
        self.key = key
        self.argv = argv
        self.env = env
        self.speaks_fastrpc = speaks_fastrpc
        self.clients: List["System"] = []
        #: the folder its server and clients run from (another checkout for
        #: a baseline; see benchmarks/versus.py --baseline)
        self.cwd = ROOT


class System:
    """One row of the table: a client kind against a server."""

    def __init__(self, name: str, argv: List[str], workloads: Sequence[str] = WORKLOADS, floor: Optional[str] = "floor (uvloop)"):
        self.name = name
        self.argv = argv
        self.workloads = tuple(workloads)
        #: the row every figure of this one is compared with
        self.floor = floor


def _env(no_ext: bool, root: str = ROOT) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if no_ext:
        env["FASTRPC_NO_EXTENSIONS"] = "1"
    else:
        env.pop("FASTRPC_NO_EXTENSIONS", None)
    return env


def build_servers() -> List[Server]:
    servers: List[Server] = []

    s = Server("floor-uvloop", _py("benchmarks.peers.floor_peer", "server", "--loop", "uvloop"), _env(False))
    s.clients += [
        System("floor (uvloop)", _py("benchmarks.peers.floor_peer", "client", "--client", "asyncio", "--loop", "uvloop"), floor=None),
        System("floor (blocking socket)", _py("benchmarks.peers.floor_peer", "client", "--client", "socket"), ("seq", "payload"), floor=None),
    ]
    servers.append(s)
    s = Server("floor-asyncio", _py("benchmarks.peers.floor_peer", "server", "--loop", "asyncio"), _env(False))
    s.clients.append(
        System("floor (asyncio)", _py("benchmarks.peers.floor_peer", "client", "--client", "asyncio", "--loop", "asyncio"), floor=None)
    )
    servers.append(s)

    for impl, no_ext in (("Cython", False), ("pure Python", True)):
        s = Server(f"fastrpc-{impl}", _py("benchmarks.peers.fastrpc_peer", "server"), _env(no_ext), speaks_fastrpc=True)
        peer = "benchmarks.peers.fastrpc_peer"
        s.clients += [
            System(f"fastrpc {impl}: AsyncClient", _py(peer, "client", "--client", "async")),
            System(f"fastrpc {impl}: Client (sync)", _py(peer, "client", "--client", "sync"), ("seq", "payload")),
            System(f"fastrpc {impl}: Pool", _py(peer, "client", "--client", "pool")),
        ]
        servers.append(s)

    # Other protocols' clients on fastrpc's port (protocol sniffing): aiorpc's
    # own msgpack-rpc client against the fastrpc server, beside it against
    # aiorpc's server (below).
    s = Server(
        "fastrpc-msgpack-rpc", _py("benchmarks.peers.fastrpc_peer", "server", "--plain-names"), _env(False), speaks_fastrpc=True
    )
    s.clients.append(System("aiorpc client -> fastrpc server (msgpack-rpc)", _py("benchmarks.peers.aiorpc_peer", "client")))
    servers.append(s)

    for codec, label in (("gob", "Go net/rpc (gob)"), ("json", "Go net/rpc/jsonrpc")):
        s = Server(f"go-{codec}", [os.path.join(GO_BIN, "server"), "-codec", codec], _env(False))
        s.clients.append(System(label, [os.path.join(GO_BIN, "client"), "-codec", codec]))
        servers.append(s)

    for module, label in (
        ("grpc_peer", "gRPC (grpc.aio)"),
        ("aiorpc_peer", "aiorpc (msgpack-rpc)"),
        ("xmlrpc_peer", "xmlrpc (stdlib)"),
        ("pyro5_peer", "Pyro5"),
        ("grpclib_peer", "grpclib (asyncio gRPC)"),
    ):
        s = Server(module, _py(f"benchmarks.peers.{module}", "server"), _env(False))
        s.clients.append(System(label, _py(f"benchmarks.peers.{module}", "client")))
        servers.append(s)

    # thriftpy2: the threaded server with the blocking client (Cython protocol and
    # transport), and the thriftpy2.contrib.aio server with its asyncio client.
    for mode, label in (("blocking", "thriftpy2: blocking (threaded)"), ("asyncio", "thriftpy2: asyncio (contrib.aio)")):
        peer = "benchmarks.peers.thriftpy2_peer"
        s = Server(f"thriftpy2_peer-{mode}", _py(peer, "server", "--mode", mode), _env(False))
        s.clients.append(System(label, _py(peer, "client", "--mode", mode)))
        servers.append(s)
    return servers


# --------------------------------------------------------------------------- processes


class Running:
    def __init__(self, server: Server):
        self.server = server
        self.proc = subprocess.Popen(
            server.argv + ["--port", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server.env,
            cwd=server.cwd,
        )
        line = b""
        deadline = time.monotonic() + 60
        # READY line (the gRPC peer compiles its proto first)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        text = line.decode(errors="replace").strip()
        if not text.startswith("READY "):
            self.stop()
            raise RuntimeError(f"server {server.key} did not start (said {text!r})")
        self.address = text.split()[1]

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def stop(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def run_client(system: System, server: Running, workload: str, duration: float, env: Dict[str, str]) -> Dict[str, Any]:
    argv = system.argv + ["--address", server.address, "--workload", workload, "--duration", str(duration)]
    cpu0 = server.cpu_seconds()
    try:
        out = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=server.server.cwd, timeout=duration + 60
        )
        text = out.stdout.decode(errors="replace").strip().splitlines()
        result = json.loads(text[-1]) if text else {"error": "client printed nothing", "calls": 0}
    except subprocess.TimeoutExpired:
        result = {"error": "client timed out", "calls": 0}
    except (json.JSONDecodeError, IndexError) as exc:
        result = {"error": f"bad client output: {exc}", "calls": 0}
    cpu = server.cpu_seconds() - cpu0
    want = "cython" if "Cython" in system.name else "python" if "pure Python" in system.name else None
    if want and result.get("impl") not in (None, want):
        result = {"error": f"wrong build: the client ran the {result.get('impl')} implementation", "calls": 0}
    served = result.get("calls", 0) + result.get("warmup_calls", 0)
    result["server_cpu_s"] = cpu
    result["server_cpu_us_per_call"] = (cpu / served * 1e6) if served else None
    if workload == "payload" and result.get("elapsed_s"):
        result["mb_per_s"] = result.get("payload_bytes", 0) * result.get("calls", 0) / result["elapsed_s"] / 1e6
    return result


def open_idle_connections(address: str, n: int, speaks_fastrpc: bool) -> List[socket.socket]:
    """Open ``n`` connections and leave them idle (fastrpc ones after the handshake)."""
    host, port = address.rsplit(":", 1)
    hello = b""
    if speaks_fastrpc:
        from fastrpc.wire._framing_py import FrameWriter

        w = FrameWriter()
        w.write_preface()
        w.write_frame(9, 0, {"client": "benchmarks-idle"})
        hello = w.take()
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        if hello:
            s.sendall(hello)
        socks.append(s)
    if speaks_fastrpc:
        for s in socks:  # wait for each server preface + handshake answer
            s.recv(65536)
    return socks


# --------------------------------------------------------------------------- reporting


def _median(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    ok = [r for r in results if not r.get("error") and r.get("calls")]
    if not ok:
        return {"error": (results[0].get("error") if results else "not run") or "no calls"}
    rates = [r["calls_per_s"] for r in ok]
    out = {
        "runs": len(ok),
        "calls_per_s": _median(rates),
        "calls_per_s_min": min(rates),
        "calls_per_s_max": max(rates),
        "p50_us": _median([r["p50_us"] for r in ok]),
        "p99_us": _median([r["p99_us"] for r in ok]),
        "server_cpu_us_per_call": _median([r.get("server_cpu_us_per_call") for r in ok]),
        "errors": sum(r.get("errors", 0) for r in ok),
        "note": ok[0].get("note"),
    }
    if ok[0].get("mb_per_s") is not None:
        mbs = [r["mb_per_s"] for r in ok]
        out.update(mb_per_s=_median(mbs), mb_per_s_min=min(mbs), mb_per_s_max=max(mbs))
    paired = [r for r in ok if r.get("paired_floor")]
    if paired:
        key = "mb_per_s" if ok[0].get("mb_per_s") is not None else "calls_per_s"
        out["paired_runs"] = len(paired)
        out["vs_floor"] = _median([r[key] / r["paired_floor"][key] for r in paired if r["paired_floor"].get(key)])
        out["p50_vs_floor_us"] = _median([r["p50_us"] - r["paired_floor"]["p50_us"] for r in paired])
    return out


def _fmt(v: Optional[float], spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _ratio(v: Optional[float], base: Optional[float]) -> str:
    if v is None or not base:
        return "-"
    return f"{v / base:.2f}x"


def _vs_floor(cell: Dict[str, Any], floor: Dict[str, Any], key: str) -> str:
    # Paired runs: the median of per-pair ratios; else ratio of medians.
    if cell.get("vs_floor") is not None:
        return f"{cell['vs_floor']:.2f}x"
    return _ratio(cell.get(key), floor.get(key))


def _dp50(cell: Dict[str, Any]) -> str:
    v = cell.get("p50_vs_floor_us")
    return "-" if v is None else f"{v:+.1f}"


def render(table: Dict[str, Dict[str, Any]], order: List[System], w5: Dict[str, Any]) -> str:
    lines = []
    for wl in WORKLOADS:
        lines.append(f"\n{TITLES[wl]}")
        if wl == "payload":
            head = (f"{'system':<34} {'MB/s (median, min-max)':>28} {'vs floor':>8} {'p50 us':>8} {'vs floor':>8} "
                    f"{'p99 us':>9} {'srv CPU us/call':>15}")
        else:
            head = (f"{'system':<34} {'calls/s (median, min-max)':>28} {'vs floor':>8} {'p50 us':>8} {'vs floor':>8} "
                    f"{'p99 us':>9} {'srv CPU us/call':>15} {'vs floor':>8}")
        lines.append(head)
        lines.append("-" * len(head))
        for system in order:
            cell = table.get(system.name, {}).get(wl)
            if cell is None:
                continue
            if "error" in cell:
                lines.append(f"{system.name:<34} {'not run: ' + str(cell['error'])[:90]}")
                continue
            floor = table.get(system.floor or system.name, {}).get(wl, {}) if system.floor else cell
            if wl == "payload":
                fig = f"{_fmt(cell['mb_per_s'], ',.1f')} ({_fmt(cell['mb_per_s_min'], ',.0f')}-{_fmt(cell['mb_per_s_max'], ',.0f')})"
                lines.append(
                    f"{system.name:<34} {fig:>28} {_vs_floor(cell, floor, 'mb_per_s'):>8} "
                    f"{_fmt(cell['p50_us'], '.1f'):>8} {_dp50(cell):>8} {_fmt(cell['p99_us'], '.1f'):>9} "
                    f"{_fmt(cell['server_cpu_us_per_call'], '.2f'):>15}"
                )
            else:
                fig = f"{_fmt(cell['calls_per_s'])} ({_fmt(cell['calls_per_s_min'])}-{_fmt(cell['calls_per_s_max'])})"
                lines.append(
                    f"{system.name:<34} {fig:>28} {_vs_floor(cell, floor, 'calls_per_s'):>8} "
                    f"{_fmt(cell['p50_us'], '.1f'):>8} {_dp50(cell):>8} {_fmt(cell['p99_us'], '.1f'):>9} "
                    f"{_fmt(cell['server_cpu_us_per_call'], '.2f'):>15} "
                    f"{_ratio(cell['server_cpu_us_per_call'], floor.get('server_cpu_us_per_call')):>8}"
                )
    if w5:
        lines.append(f"\nW5 {IDLE_CONNECTIONS} idle connections, then W1 on one more")
        head = f"{'server':<34} {'RSS per idle conn':>18} {'W1 idle calls/s':>16} {'W1 loaded calls/s':>18} {'slowdown':>9}"
        lines.append(head)
        lines.append("-" * len(head))
        for name, r in w5.items():
            if "error" in r:
                lines.append(f"{name:<34} not run: {r['error'][:90]}")
                continue
            lines.append(
                f"{name:<34} {r['rss_per_conn_kib']:>14.1f} KiB {_fmt(r['w1_idle_calls_per_s']):>16} "
                f"{_fmt(r['w1_loaded_calls_per_s']):>18} {r['slowdown_pct']:>8.1f}%"
            )
    return "\n".join(lines)


def chart(table: Dict[str, Dict[str, Any]], order: List[System], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(20, 7))
    for ax, wl in zip(axes, WORKLOADS):
        names, vals, errs_lo, errs_hi = [], [], [], []
        key = "mb_per_s" if wl == "payload" else "calls_per_s"
        for system in order:
            cell = table.get(system.name, {}).get(wl)
            if not cell or "error" in cell:
                continue
            names.append(system.name)
            vals.append(cell[key])
            errs_lo.append(cell[key] - cell[key + "_min"])
            errs_hi.append(cell[key + "_max"] - cell[key])
        colors = ["#999999" if n.startswith("floor") else "#d62728" if n.startswith("fastrpc") else "#1f77b4" for n in names]
        y = list(range(len(names)))
        ax.barh(y, vals, xerr=[errs_lo, errs_hi], color=colors)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(TITLES[wl], fontsize=10)
        ax.set_xlabel("MB/s" if wl == "payload" else "calls/s")
    fig.suptitle(f"fastrpc vs peers on loopback ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}); median of runs, bars show min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per client run (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="client runs per cell (median; default 3)")
    ap.add_argument("--paired-runs", type=int, default=9,
                    help="runs per cell of W1 and W3, each after a floor run (median of the pairs; default 9)")
    ap.add_argument("--paired-duration", type=float, default=0.4,
                    help="seconds per client run of W1 and W3 (default 0.4)")
    ap.add_argument("--only", nargs="*", help="run only systems whose name contains one of these words")
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--no-w5", action="store_true", help="skip the idle-connections workload")
    ap.add_argument("--out", default=RESULTS, help="folder for results.json and chart.png")
    args = ap.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the servers

    servers = build_servers()
    order: List[System] = [c for s in servers for c in s.clients]
    if args.only:
        keep = [w.lower() for w in args.only]
        for s in servers:
            s.clients = [c for c in s.clients if c.floor is None or any(w in c.name.lower() for w in keep)]
        order = [c for s in servers for c in s.clients]

    table: Dict[str, Dict[str, Any]] = {}
    raw: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    w5: Dict[str, Any] = {}
    started = time.monotonic()
    print(f"benchmark harness: {args.runs} run(s) x {args.duration}s per cell ({args.paired_runs} paired runs x "
          f"{args.paired_duration}s for W1, W3); machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}", flush=True)
    # Every server runs for the whole measurement and the runs are
    # interleaved (run 1 of every system, then run 2, ...): on shared cores
    # the machine's speed drifts over minutes, and a ratio is only fair
    # between figures taken seconds apart.
    live: Dict[str, Running] = {}
    try:
        for server in servers:
            if not server.clients:
                continue
            reason = None
            if not os.path.exists(server.argv[0]):
                reason = f"{server.argv[0]} is missing (Go peers: run benchmarks/go/build.sh; needs golang-go)"
            else:
                try:
                    live[server.key] = Running(server)
                except (RuntimeError, OSError) as exc:
                    reason = str(exc)
            if reason is not None:
                for c in server.clients:
                    table[c.name] = {wl: {"error": reason} for wl in c.workloads}
                print(f"- {server.key}: not run: {reason}", flush=True)
        runnable = [(server, c) for server in servers if server.key in live for c in server.clients]
        for server, system in runnable:
            table[system.name] = {}
            raw[system.name] = {wl: [] for wl in args.workloads if wl in system.workloads}
        by_name = {system.name: (server, system) for server, system in runnable}
        for wl in args.workloads:
            runs, duration = (args.paired_runs, args.paired_duration) if wl in PAIRED else (args.runs, args.duration)
            for k in range(runs):
                for server, system in runnable:
                    if wl not in system.workloads:
                        continue
                    pair = None
                    floor = by_name.get(system.floor) if system.floor else None
                    paired = wl in PAIRED and floor is not None and wl in floor[1].workloads
                    if paired:
                        # The floor again, right before or after: this run's
                        # ratio and p50 difference compare figures seconds
                        # apart.  The order alternates (floor first in even
                        # pairs, last in odd ones), so that whatever favours
                        # the first or the second of two runs cancels out.
                        fserver, fsystem = floor
                        floor_run = functools.partial(run_client, fsystem, live[fserver.key], wl, duration, fserver.env or _env(False))
                        if k % 2 == 0:
                            pair = floor_run()
                    result = run_client(system, live[server.key], wl, duration, server.env or _env(False))
                    if paired:
                        if k % 2 == 1:
                            pair = floor_run()
                        raw[fsystem.name][wl].append(pair)
                    if pair is not None and not pair.get("error") and pair.get("calls"):
                        result["paired_floor"] = {k: pair.get(k) for k in ("calls_per_s", "p50_us", "mb_per_s")}
                    raw[system.name][wl].append(result)
            for server, system in runnable:
                if wl in system.workloads:
                    table[system.name][wl] = cell = summarize(raw[system.name][wl])
                    fig = cell.get("mb_per_s", cell.get("calls_per_s"))
                    print(f"- {system.name:<34} {wl:<10} {_fmt(fig, ',.1f') if 'error' not in cell else 'error: ' + cell['error']}", flush=True)
        if not args.no_w5:
            for server in servers:
                if server.key not in live:
                    continue
                first = server.clients[0]
                if "seq" in first.workloads and "seq" in table.get(first.name, {}) and "error" not in table[first.name]["seq"]:
                    w5[server.key] = measure_w5(live[server.key], first, args.duration, server.env or _env(False))
                    r = w5[server.key]
                    print(f"- {server.key:<34} W5 {r.get('rss_per_conn_kib', 0):.1f} KiB/conn, W1 slowdown {r.get('slowdown_pct', 0):.1f}%"
                          if "error" not in r else f"- {server.key} W5 error: {r['error']}", flush=True)
    finally:
        for running in live.values():
            running.stop()

    text = render(table, order, w5)
    print(text)
    elapsed = time.monotonic() - started
    print(f"\n(total {elapsed:.0f}s)")
    os.makedirs(args.out, exist_ok=True)
    meta = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "duration_s": args.duration,
        "runs": args.runs,
        "paired_runs": args.paired_runs,
        "paired_duration_s": args.paired_duration,
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "table": table, "w5": w5, "raw": raw}, f, indent=1, default=str)
    with open(os.path.join(args.out, "table.txt"), "w") as f:
        f.write(text.lstrip("\n") + "\n")
    png = chart(table, order, os.path.join(args.out, "chart.png"))
    print(f"wrote {os.path.join(args.out, 'results.json')}" + (f" and {png}" if png else " (no matplotlib: no chart)"))
    return 0


def measure_w5(running: Running, system: System, duration: float, env: Dict[str, str], rounds: int = 3) -> Dict[str, Any]:
    """Server RSS per idle connection, and W1's slowdown with them open.

    W1 runs alternate, idle then loaded (1,000 connections opened just
    before, closed just after), ``rounds`` times; the slowdown is the median
    of the per-pair slowdowns, each between runs seconds apart.  RSS is
    taken in the first round (freed memory is reused by later rounds).
    """
    per_conn = None
    idles: List[float] = []
    loadeds: List[float] = []
    slowdowns: List[float] = []
    for i in range(rounds):
        idle = run_client(system, running, "seq", duration, env)
        rss0 = running.rss_bytes()
        try:
            socks = open_idle_connections(running.address, IDLE_CONNECTIONS, running.server.speaks_fastrpc)
        except OSError as exc:
            return {"error": f"could not open {IDLE_CONNECTIONS} connections: {exc}"}
        try:
            time.sleep(0.5)
            if per_conn is None:
                per_conn = (running.rss_bytes() - rss0) / IDLE_CONNECTIONS / 1024
            loaded = run_client(system, running, "seq", duration, env)
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.2)
        for r in (idle, loaded):
            if r.get("error") or not r.get("calls"):
                return {"error": r.get("error") or "no calls"}
        idles.append(idle["calls_per_s"])
        loadeds.append(loaded["calls_per_s"])
        slowdowns.append((1 - loaded["calls_per_s"] / idle["calls_per_s"]) * 100)
    return {
        "rss_per_conn_kib": per_conn,
        "w1_idle_calls_per_s": _median(idles),
        "w1_loaded_calls_per_s": _median(loadeds),
        "slowdown_pct": _median(slowdowns),
        "slowdowns_pct": slowdowns,
    }


if __name__ == "__main__":
    sys.exit(main())
