"""Shared helpers for the end-to-end tests (imported by conftest and tests)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))


class Arith:
    """The seed example service."""

    def multiply(self, a: int, b: int) -> int:
        return a * b

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, value: Any) -> Any:
        return value

    async def sleep_echo(self, seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value


def hostport(address: str) -> "tuple[str, int]":
    """``("127.0.0.1", 1234)`` from ``"tcp://127.0.0.1:1234"``."""
    host, port = address[6:].rsplit(":", 1)
    return host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A fastrpc server in a child process (tests/rpc/server_proc.py)."""

    def __init__(self, port: int, extra: Optional[list] = None) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server_proc.py"), str(port)] + (extra or []),
            stdout=subprocess.PIPE,
            env=env,
        )
        line = self.proc.stdout.readline()  # "ready" once listening
        if not line.startswith(b"ready"):
            self.kill()
            raise RuntimeError(f"server process failed to start: {line!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
