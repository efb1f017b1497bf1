"""The ``fastrpc`` command line, run as a user runs it: ``python -m fastrpc
...`` in a subprocess (the environment inherited, so FASTRPC_NO_EXTENSIONS
reaches it), against a server this module starts on a thread of its own
or against ``fastrpc serve`` itself."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

import fastrpc
from rpc_support import free_port

#: the folder that holds the fastrpc package this process imported: the
#: children import the same one (a checkout, or the installed package)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastrpc.__file__)))
#: no command of these tests may take longer
COMMAND_TIMEOUT = 60.0


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def fastrpc_cli(*args: str, cwd: Optional[str] = None, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m fastrpc ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "fastrpc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=cwd,
        timeout=timeout,
    )


# --------------------------------------------------------------------------
# a server on a thread of this process


class Calc:
    """The service the client commands call."""

    def multiply(self, a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    def greet(self, name: str, greeting: str = "hello") -> str:
        return f"{greeting}, {name}"

    def echo(self, value: Any) -> Any:
        return value

    def meta(self) -> Dict[str, Any]:
        return dict(fastrpc.current_call().metadata)

    def blob(self) -> Any:
        return {"data": b"\x00\x01abc", "n": 1}

    def fail(self) -> None:
        raise fastrpc.NotFound("no such user", {"id": 7})

    def boom(self) -> None:
        raise ValueError("kaboom")

    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


class ThreadServer:
    """A fastrpc server on its own event loop, on a daemon thread."""

    def __init__(self) -> None:
        self.server = fastrpc.Server()
        self.server.register(Calc())
        self.server.health.set("Down", "NOT_SERVING")
        self.loop = asyncio.new_event_loop()
        self.address = ""
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        if not started.wait(10) or not self.address:
            raise RuntimeError("the test server did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.address = await self.server.start("tcp://127.0.0.1:0")
            started.set()
            await self.server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        finally:
            started.set()
            self.loop.close()

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(grace=1), self.loop)
        fut.result(10)
        self.thread.join(10)


@pytest.fixture(scope="module")
def target():
    srv = ThreadServer()
    yield srv.address
    srv.stop()


# --------------------------------------------------------------------------
# fastrpc serve in a subprocess


SERVICE_MODULE = '''
import fastrpc

class Greeter:
    """Greets."""
    def hello(self, name):
        """Say hello."""
        return "hello, " + name
    def pid(self):
        import os
        return os.getpid()

def make_server():
    server = fastrpc.Server()
    server.register(Greeter(), "Hi")
    server.health.set("Hi", "SERVING")
    return server

built = make_server()
greeter = Greeter()

class NeedsArgs:
    def __init__(self, db):
        self.db = db
    def get(self):
        return self.db
'''


class Serving:
    """``fastrpc serve ...`` running: its process, its address, its output."""

    def __init__(self, args: List[str], cwd: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastrpc", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=cwd,
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stdout: List[str] = []
        self.stderr = ""
        self._err: List[str] = []
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.address = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("listening on "):
                self.address = line.split()[2]
            if line.startswith("ready"):
                return
        self.kill()
        raise RuntimeError(f"fastrpc serve did not start: {self.stdout} {''.join(self._err)}")

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` to the process (by its PID); its exit status."""
        os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout)
        self._finish()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._finish()

    def _finish(self) -> None:
        for t in self._readers:
            t.join(10)
        self.stderr = "".join(self._err)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def serve(tmp_path):
    (tmp_path / "greetsvc.py").write_text(SERVICE_MODULE)
    started: List[Serving] = []

    def start(*args: str) -> Serving:
        s = Serving(list(args), str(tmp_path))
        started.append(s)
        return s

    start.cwd = str(tmp_path)  # type: ignore[attr-defined]
    yield start
    for s in started:
        if s.proc.poll() is None:
            s.kill()


# --------------------------------------------------------------------------
# call


def test_call_positional_arguments_are_json(target):
    r = fastrpc_cli("call", target, "Calc.multiply", "7", "8")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 56
    r = fastrpc_cli("call", target, "Calc.echo", '{"a": [1, 2.5, null, true]}', "--compact")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '{"a":[1,2.5,null,true]}'


def test_call_bare_words_are_strings_and_keywords(target):
    r = fastrpc_cli("call", target, "Calc.greet", "ada", "--kw", "greeting=hi")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "hi, ada"
    r = fastrpc_cli("call", target, "Calc.echo", '"42"')  # quoted JSON: the string
    assert json.loads(r.stdout) == "42"
    r = fastrpc_cli("call", target, "Calc.greet", "--kw", 'name="bob"', "--kw", "greeting=hey")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "hey, bob"


def test_call_metadata(target):
    r = fastrpc_cli("call", target, "Calc.meta", "--meta", "user=ada", "--meta", "n=1")
    assert r.returncode == 0, r.stderr
    md = json.loads(r.stdout)
    assert md["user"] == "ada" and md["n"] == "1"  # metadata values stay strings


def test_call_timeout_is_a_deadline(target):
    t0 = time.monotonic()
    r = fastrpc_cli("call", target, "Calc.sleep", "5", "--timeout", "0.2")
    assert time.monotonic() - t0 < 5
    assert r.returncode == 1
    assert "DEADLINE_EXCEEDED" in r.stderr
    r = fastrpc_cli("call", target, "Calc.sleep", "0.05", "--timeout", "5")
    assert r.returncode == 0 and json.loads(r.stdout) == 0.05


def test_call_bytes_results(target):
    r = fastrpc_cli("call", target, "Calc.blob")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"data": "AAFhYmM=", "n": 1}
    r = fastrpc_cli("call", target, "Calc.blob", "--bytes", "hex")
    assert json.loads(r.stdout)["data"] == "0001616263"


def test_call_handler_error_exit_code_and_message(target):
    r = fastrpc_cli("call", target, "Calc.fail")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "NOT_FOUND: no such user" in r.stderr
    assert '"id":7' in r.stderr
    assert "Traceback" not in r.stderr
    r = fastrpc_cli("call", target, "Calc.boom")
    assert r.returncode == 1
    assert "UNKNOWN: ValueError: kaboom" in r.stderr


def test_call_unknown_method_hints_close_names(target):
    r = fastrpc_cli("call", target, "Calc.multipli", "1", "2")
    assert r.returncode == 1
    assert "NOT_FOUND" in r.stderr
    assert "hint: did you mean Calc.multiply" in r.stderr
    r = fastrpc_cli("call", target, "Arith.multiply", "1", "2")  # the method under another service
    assert r.returncode == 1
    assert "did you mean Calc.multiply" in r.stderr
    r = fastrpc_cli("call", target, "Nothing.like_it")
    assert r.returncode == 1
    assert "hint: the server has" in r.stderr and "Calc.greet" in r.stderr


def test_call_usage_errors(target):
    r = fastrpc_cli("call", target, "Calc.greet", "--kw", "timeout=1")
    assert r.returncode == 2 and "reserved" in r.stderr
    r = fastrpc_cli("call", target, "Calc.greet", "--kw", "novalue")
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr
    r = fastrpc_cli("call", target, "multiply")
    assert r.returncode == 2 and "Service.method" in r.stderr


def _one_error_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if line.startswith("fastrpc: error:")]) == 1, stderr


def test_unreachable_and_bad_targets_exit_2():
    port = free_port()
    for cmd in (["call", f"127.0.0.1:{port}", "Calc.multiply", "1", "2"], ["list", f"127.0.0.1:{port}"],
                ["health", f"127.0.0.1:{port}"]):
        r = fastrpc_cli(*cmd, "--connect-timeout", "2")
        assert r.returncode == 2, (cmd, r.stderr)
        assert f"cannot reach 127.0.0.1:{port}" in r.stderr
        _one_error_line(r.stderr)
    r = fastrpc_cli("bench", f"127.0.0.1:{port}", "Calc.multiply", "1", "2", "-d", "0.1")
    assert r.returncode == 2 and "cannot reach" in r.stderr
    _one_error_line(r.stderr)
    for bad in ("foo://somewhere", "no-port-here"):
        r = fastrpc_cli("call", bad, "Calc.multiply", "1", "2")
        assert r.returncode == 2, r.stderr
        assert "bad target" in r.stderr
        _one_error_line(r.stderr)


# --------------------------------------------------------------------------
# list, health


def test_list_table(target):
    r = fastrpc_cli("list", target)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["METHOD", "KIND", "SIGNATURE", "DESCRIPTION"]
    row = next(line for line in lines if line.startswith("Calc.multiply"))
    # (this module's annotations are strings: from __future__ import annotations)
    assert "sync" in row and "(a: int, b: int) -> int" in row.replace("'", "") and "Multiply two numbers." in row
    assert any(line.startswith("Calc.sleep") and "async" in line for line in lines)
    assert not any(line.startswith("fastrpc.") for line in lines)
    r = fastrpc_cli("list", target, "--all")
    assert any(line.startswith("fastrpc.Health.check") for line in r.stdout.splitlines())


def test_list_json(target):
    r = fastrpc_cli("list", target, "--json")
    assert r.returncode == 0, r.stderr
    methods = {m["name"]: m for m in json.loads(r.stdout)}
    assert set(methods) == {f"Calc.{n}" for n in ("blob", "boom", "echo", "fail", "greet", "meta", "multiply", "sleep")}
    assert methods["Calc.greet"]["signature"].replace("'str'", "str") == "(name: str, greeting: str = 'hello') -> str"
    assert methods["Calc.sleep"]["kind"] == "async"
    assert set(methods["Calc.multiply"]) >= {"name", "kind", "signature", "doc", "idempotent"}


def test_health(target):
    r = fastrpc_cli("health", target)
    assert (r.returncode, r.stdout.strip()) == (0, "SERVING")
    r = fastrpc_cli("health", target, "Calc")
    assert (r.returncode, r.stdout.strip()) == (0, "SERVING")
    r = fastrpc_cli("health", target, "Down")
    assert (r.returncode, r.stdout.strip()) == (1, "NOT_SERVING")
    r = fastrpc_cli("health", target, "Nope", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"target": target, "service": "Nope", "status": "SERVICE_UNKNOWN"}


# --------------------------------------------------------------------------
# bench

LATENCY_KEYS = ["min", "p50", "p90", "p99", "p999", "max"]


def test_bench_json(target):
    r = fastrpc_cli(
        "bench", target, "Calc.multiply", "7", "8", "--connections", "2", "--concurrency", "8",
        "--duration", "0.3", "--warmup", "0.1", "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr  # stderr is not a terminal: no progress bar
    res = json.loads(r.stdout)
    for key in ("target", "method", "connections", "concurrency", "duration_s", "warmup_s", "calls", "errors",
                "error_codes", "calls_per_s", "latency_us", "histogram", "implementation", "loop"):
        assert key in res, key
    assert res["calls"] > 0 and res["errors"] == 0 and res["error_codes"] == {}
    assert res["connections"] == 2 and res["concurrency"] == 8
    assert 0.25 < res["duration_s"] < 5
    assert res["calls_per_s"] > 0
    lat = [res["latency_us"][k] for k in LATENCY_KEYS]
    assert all(v > 0 for v in lat)
    assert lat == sorted(lat), res["latency_us"]
    assert res["latency_us"]["min"] <= res["latency_us"]["mean"] <= res["latency_us"]["max"]
    assert sum(h["count"] for h in res["histogram"]) == res["calls"]
    assert res["implementation"] == ("cython" if fastrpc.EXTENSIONS_ACTIVE else "python")


def test_bench_report_histogram_and_progress(target):
    r = fastrpc_cli(
        "bench", target, "Calc.greet", "ada", "--kw", "greeting=hi", "-c", "1", "-n", "4",
        "-d", "0.3", "--warmup", "0.1", "--progress",
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Summary:" in out and "Calls/s:" in out
    for label in ("p50", "p90", "p99", "p99.9"):
        assert any(line.split()[:1] == [label] for line in out.splitlines()), label
    hist = out.split("Latency histogram:\n", 1)[1].splitlines()
    bars = [line for line in hist if "|" in line]
    assert 1 <= len(bars) <= 11
    counts = [int(line.split("[", 1)[1].split("]", 1)[0]) for line in bars]
    calls = int(next(line for line in out.splitlines() if "Calls:" in line).split()[1].replace(",", ""))
    assert sum(counts) == calls > 0
    assert any(line.rstrip().endswith(("\u220e", "#")) for line in bars)  # the longest bar is drawn
    # the progress bar, forced (text mode reads its \r as a line break)
    assert "running" in r.stderr and "calls" in r.stderr and "\x1b[K" in r.stderr


def test_bench_errors(target):
    r = fastrpc_cli("bench", target, "Calc.multipli", "1", "2", "-d", "0.2", "--warmup", "0")
    assert r.returncode == 1
    assert "did you mean Calc.multiply" in r.stderr
    r = fastrpc_cli("bench", target, "Calc.multiply", "1", "2", "-c", "4", "-n", "2")
    assert r.returncode == 2 and "idle" in r.stderr


# --------------------------------------------------------------------------
# serve


def test_serve_a_class_until_sigterm(serve):
    s = serve("greetsvc:Greeter", "--bind", "tcp://127.0.0.1:0", "--access-log")
    assert s.address.startswith("tcp://127.0.0.1:")
    assert "Greeter.hello" in s.stdout[0]
    r = fastrpc_cli("call", s.address, "Greeter.hello", "ada")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "hello, ada"
    r = fastrpc_cli("list", s.address)
    assert "Say hello." in r.stdout
    assert s.stop(signal.SIGTERM) == 0
    assert s.stdout[-1] == "stopped"
    assert "Greeter.hello OK" in s.stderr  # the access log


def test_serve_an_object_with_a_service_name_until_sigint(serve):
    s = serve("greetsvc:greeter", "--bind", "tcp://127.0.0.1:0", "--service", "Hello")
    r = fastrpc_cli("call", s.address, "Hello.hello", "bob")
    assert json.loads(r.stdout) == "hello, bob"
    assert s.stop(signal.SIGINT) == 0


def test_serve_a_factory_with_two_workers(serve):
    s = serve("greetsvc:make_server", "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--grace", "1")
    assert "(2 workers)" in s.stdout[-1]
    pids = set()
    for _ in range(12):
        r = fastrpc_cli("call", s.address, "Hi.pid", "--compact")
        assert r.returncode == 0, r.stderr
        pids.add(json.loads(r.stdout))
        if len(pids) == 2:
            break
    assert s.proc.pid not in pids  # the supervisor serves nothing itself
    r = fastrpc_cli("health", s.address, "Hi")
    assert (r.returncode, r.stdout.strip()) == (0, "SERVING")
    assert s.stop(signal.SIGTERM) == 0


def test_serve_a_built_server(serve):
    port = free_port()
    s = serve("greetsvc:built", "--bind", f"127.0.0.1:{port}")
    assert s.address == f"tcp://127.0.0.1:{port}"
    r = fastrpc_cli("call", s.address, "Hi.hello", "cy")
    assert json.loads(r.stdout) == "hello, cy"
    assert s.stop() == 0


@pytest.mark.parametrize(
    "spec, extra, message",
    [
        ("greetsvc", [], "expected MODULE:OBJECT"),
        ("nosuchmodule:App", [], "no module named 'nosuchmodule'"),
        ("greetsvc:Greeeter", [], "has no attribute 'Greeeter'"),
        ("greetsvc:NeedsArgs", [], "cannot instantiate greetsvc:NeedsArgs"),
        ("greetsvc:built", ["--access-log"], "already built fastrpc.Server"),
        ("greetsvc:Greeter", ["--registry", "etcd://127.0.0.1:2379"], "--registry needs --name"),
        ("greetsvc:Greeter", ["--bind", "nowhere"], "cannot serve on nowhere"),
    ],
)
def test_serve_bad_app_or_options(serve, spec, extra, message):
    r = fastrpc_cli("serve", spec, *extra, cwd=serve.cwd, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if spec == "greetsvc:Greeeter":
        assert "hint: did you mean Greeter" in r.stderr


def test_serve_address_in_use(serve):
    s = serve("greetsvc:Greeter", "--bind", "tcp://127.0.0.1:0")
    r = fastrpc_cli("serve", "greetsvc:Greeter", "--bind", s.address, cwd=serve.cwd, timeout=30)
    assert r.returncode == 2 and "cannot listen on" in r.stderr
    assert s.stop() == 0


# --------------------------------------------------------------------------
# the rest


def test_help_and_version():
    r = fastrpc_cli("--help")
    assert r.returncode == 0
    for command in ("serve", "call", "list", "health", "bench", "demo"):
        assert command in r.stdout
    r = fastrpc_cli("--version")
    assert r.returncode == 0 and fastrpc.__version__ in r.stdout


def test_demo_still_runs():
    impl = "cython" if fastrpc.EXTENSIONS_ACTIVE else "python"
    r = fastrpc_cli("demo", "--duration", "0.05", "--impl", impl, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Arith.multiply(7, 8) = 56" in r.stdout
    assert "raw echo floor" in r.stdout
