"""A real etcd for tests: Debian's etcd-server, started on loopback ports
by the fixture, stopped in teardown (skipped with the reason when it or
aetcd is missing; CI sets FASTRPC_REQUIRE_ETCD=1, which makes that a
failure)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rpc_support import free_port

ETCD = shutil.which("etcd")
#: CI sets it: there a missing etcd (or aetcd, which needs Python 3.10+) is
#: a failure, not a skip
REQUIRE = os.environ.get("FASTRPC_REQUIRE_ETCD") == "1" and sys.version_info >= (3, 10)


class Etcd:
    """One etcd server on loopback ports, started and stopped by us."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.port = free_port()
        self.peer = free_port()
        self.proc: Any = None
        self.runs = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.runs += 1
        data = os.path.join(self.base, f"data{self.runs}")  # a fresh data dir each start
        url, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        self.log = open(os.path.join(self.base, f"etcd{self.runs}.log"), "wb")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", data, "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"t={peer}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("etcd did not start listening within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()


@pytest.fixture
def etcd(tmp_path: Any) -> Iterator[Etcd]:
    if ETCD is None:
        if REQUIRE:
            pytest.fail("FASTRPC_REQUIRE_ETCD=1 but no etcd on PATH (Debian: apt-get install etcd-server)")
        pytest.skip("no etcd on PATH (Debian: apt-get install etcd-server)")
    if REQUIRE:
        import aetcd  # noqa: F401 - fails the test rather than skipping
    else:
        pytest.importorskip("aetcd", reason="aetcd is not installed (pip install .[etcd])")
    server = Etcd(str(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.stop()
