"""``Server.run(..., workers=N)``: forked workers sharing a port.

Every test starts a server script (written to ``tmp_path``) in a child
process; its ``ready`` callback prints the bound addresses.  The wire
implementation is the one the test process selected: the child inherits
``FASTRPC_NO_EXTENSIONS``.  Linux only (``SO_REUSEPORT`` and ``/proc``).
Teardown kills, by PID, the server process and every worker the test saw.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import fastrpc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading and /proc: Linux")

GRACE = 2.0

SCRIPT = '''
import logging
import os
import sys
import time

import fastrpc

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(process)d %(name)s %(levelname)s %(message)s")


class Arith:
    def pid(self):
        return os.getpid()

    def multiply(self, a, b):
        return a * b

    def crash(self):
        os._exit(3)

    async def sleep_pid(self, seconds):
        import asyncio

        await asyncio.sleep(seconds)
        return os.getpid()


class FileRegistry:
    """A registry that notes each register/deregister (and who did it) in a file."""

    def __init__(self, path):
        self.path = path

    def _note(self, *words):
        with open(self.path, "a") as f:
            f.write(" ".join(str(w) for w in words) + "\\n")

    async def register(self, record=None, **fields):
        self._note("register", os.getpid(), fields["name"], fields["address"])
        return fields

    async def deregister(self):
        self._note("deregister", os.getpid())


def ready(addresses):
    print("listening on " + " ".join(addresses), flush=True)


if __name__ == "__main__":
    notes = os.environ.get("REGISTRY_NOTES")
    tls = None
    if os.environ.get("TLS_CERT"):
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(os.environ["TLS_CERT"])
    server = fastrpc.Server(registry=FileRegistry(notes) if notes else None, name="arith", ssl=tls)
    server.register(Arith())
    try:
        server.run(*sys.argv[3:], workers=int(sys.argv[1]), grace=float(sys.argv[2]), ready=ready)
    except Exception as exc:
        print(f"failed {type(exc).__name__}: {exc}", flush=True)
        sys.exit(2)
    print("stopped", flush=True)
'''


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> set[int]:
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None and fields[1] == str(pid) and fields[0] != "Z":
                out.add(int(name))
    return out


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Served:
    """The server script running in a child process."""

    def __init__(self, tmp_path, workers: int, addresses: list[str], grace: float = GRACE, env: dict | None = None) -> None:
        self.script = str(tmp_path / "workers_server.py")
        with open(self.script, "w") as f:
            f.write(SCRIPT)
        self.stderr_path = tmp_path / f"server-{len(os.listdir(tmp_path))}.err"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **(env or {}))
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, self.script, str(workers), str(grace), *addresses],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        #: every worker PID seen (teardown kills those still running)
        self.known: set[int] = set()
        self.addresses: list[str] = []
        #: "listening on ADDRESS..." (or "failed ..." when run() raised)
        self.first_line = self.readline(30)
        if self.first_line.startswith("listening on "):
            self.addresses = self.first_line.split()[2:]

    def readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else ""

    def log(self) -> str:
        return self.stderr_path.read_text()

    def workers(self) -> set[int]:
        pids = children(self.proc.pid)
        self.known |= pids
        return pids

    def call(self, method: str, *args, address: str | None = None, **options):
        """One call on a connection of its own (a new one: the kernel may
        hand it to any worker)."""
        with fastrpc.Client(address or self.addresses[0], connect_timeout=5, timeout=10, **options) as client:
            result = client.call(method, *args)
        if method in ("pid", "sleep_pid"):
            self.known.add(result)
        return result

    def pids_answering(self, want: int, tries: int = 200, address: str | None = None, **options) -> set[int]:
        seen: set[int] = set()
        for _ in range(tries):
            seen.add(self.call("Arith.pid", address=address, **options))
            if len(seen) >= want:
                break
        return seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.workers()
            self.proc.kill()
        self.proc.wait(10)
        for pid in self.known:
            if pid != self.proc.pid and alive(pid) and self._ours(pid):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(alive(p) for p in self.known if p != self.proc.pid), 5)
        self.proc.stdout.close()

    def _ours(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self.script.encode() in f.read()
        except OSError:
            return False


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def start(workers: int = 2, *addresses: str, grace: float = GRACE, env: dict | None = None) -> Served:
        s = Served(tmp_path, workers, list(addresses) or ["127.0.0.1:0"], grace, env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_two_workers_answer_on_one_port(serve):
    s = serve(2)
    assert len(s.addresses) == 1 and s.addresses[0].startswith("tcp://127.0.0.1:"), s.log()
    assert not s.addresses[0].endswith(":0")
    workers = s.workers()
    assert len(workers) == 2
    pids = s.pids_answering(2)
    assert pids == workers, "both workers answer, nothing else does"
    assert s.proc.pid not in pids
    assert s.call("Arith.multiply", 6, 7) == 42


def test_sigterm_drains_every_worker_and_exits_0(serve):
    s = serve(2)
    workers = s.workers()
    s.pids_answering(2)
    # A call in flight on each of several connections when SIGTERM comes:
    # every one is answered (each worker drains with its grace).
    results: list = []

    def slow() -> None:
        try:
            results.append(s.call("Arith.sleep_pid", 0.8))
        except Exception as exc:  # noqa: BLE001 - the assertion shows it
            results.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(15)
    assert s.proc.wait(GRACE + 10) == 0, s.log()
    assert all(isinstance(r, int) for r in results), results
    assert s.readline(5) == "stopped"
    assert wait_until(lambda: not any(alive(p) for p in workers), 2)
    with pytest.raises(fastrpc.Unavailable):
        s.call("Arith.pid")


def test_killed_worker_is_restarted(serve):
    s = serve(2)
    before = s.workers()
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(s.workers() - before) == 1 and len(s.workers()) == 2, 10), s.log()
    new = (s.workers() - before).pop()
    assert s.pids_answering(2) == (before - {victim}) | {new}
    assert "was killed by SIGKILL: restarting" in s.log()
    assert s.proc.poll() is None


def test_workers_leave_when_the_parent_is_killed(serve):
    s = serve(2)
    workers = s.workers()
    assert len(workers) == 2
    s.proc.kill()
    s.proc.wait(10)
    assert wait_until(lambda: not any(alive(p) for p in workers), 10), s.log()
    assert "the supervising process is gone" in s.log()


def test_one_worker_is_the_plain_server(serve):
    s = serve(1)
    assert s.addresses and s.addresses[0].startswith("tcp://127.0.0.1:")
    assert s.workers() == set()
    assert s.pids_answering(1, tries=5) == {s.proc.pid}
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(GRACE + 10) == 0
    assert s.readline(5) == "stopped"


def test_unix_socket_is_shared_by_the_workers(serve, tmp_path):
    path = str(tmp_path / "w.sock")
    s = serve(2, f"unix:{path}", "127.0.0.1:0")
    assert s.addresses[0] == f"unix:{path}" and s.addresses[1].startswith("tcp://"), s.log()
    assert s.pids_answering(2, address=f"unix:{path}") == s.workers()
    assert s.pids_answering(2, address=s.addresses[1]) == s.workers()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(GRACE + 10) == 0
    assert not os.path.exists(path)


def test_a_taken_port_fails_at_start(serve):
    first = serve(2)
    port = first.addresses[0].rsplit(":", 1)[1]
    second = serve(2, f"127.0.0.1:{port}")
    assert second.proc.wait(15) == 2
    assert second.first_line.startswith("failed OSError") and "Address already in use" in second.first_line
    assert not second.known and children(second.proc.pid) == set()
    assert first.pids_answering(2) == first.workers()


def test_a_crash_loop_stops_the_server(serve):
    s = serve(2)
    deadline = time.monotonic() + 30  # 11 crashes; the backoff adds up to ~6 s
    while s.proc.poll() is None and time.monotonic() < deadline:
        try:
            s.call("Arith.crash")
        except fastrpc.RpcError:
            pass  # the worker died under the call, as it should
        time.sleep(0.05)
    assert s.proc.wait(30) == 2, s.log()
    assert "workers keep dying" in s.readline(5)
    assert "restarting it in" in s.log()


def test_one_registry_record_kept_by_the_parent(serve, tmp_path):
    notes = tmp_path / "registry.txt"
    s = serve(2, env={"REGISTRY_NOTES": str(notes)})
    assert s.pids_answering(2) == s.workers()
    assert notes.read_text().splitlines() == [f"register {s.proc.pid} arith {s.addresses[0]}"]
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(GRACE + 10) == 0
    assert notes.read_text().splitlines()[1:] == [f"deregister {s.proc.pid}"]


def test_tls_workers_share_the_port(serve, tmp_path):
    trustme = pytest.importorskip("trustme", reason="trustme is not installed (pip install .[test])")
    import ssl

    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    s = serve(2, "tls://127.0.0.1:0", env={"TLS_CERT": str(pem)})
    assert s.addresses and s.addresses[0].startswith("tls://127.0.0.1:"), s.log()
    assert s.pids_answering(2, ssl=client_ctx) == s.workers()
