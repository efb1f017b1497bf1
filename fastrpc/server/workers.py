"""``Server.run(..., workers=N)``: N forked processes serving the same addresses.

The process that calls ``run()`` becomes a supervisor; it never serves a
call itself.  Before it forks it binds every address once:

* ``tcp://`` and ``tls://`` on Linux: a socket bound with ``SO_REUSEPORT``
  (not listening) fixes the port (port 0 is resolved here) and holds it
  for the whole run; each worker then listens on that port with
  ``SO_REUSEPORT`` of its own, and the kernel spreads new connections over
  the workers' listeners (by a hash of the connection's addresses);
* ``unix:`` addresses, and TCP where ``SO_REUSEPORT`` does not balance
  (every platform but Linux): one listening socket, inherited by every
  worker through ``fork``; the workers accept from it in turn.

Each worker is a fork of the supervisor that creates its own event loop
(uvloop when installed, as ``run()`` does), starts the :class:`Server`
on those addresses and serves until SIGTERM/SIGINT, then drains through
its ordinary :meth:`Server.shutdown` with ``grace``.  Workers have no
registry: the supervisor registers the server once, after every worker
listens, and deregisters first when it stops (one record per host: the
host is one endpoint to a client, whichever worker the kernel hands a
connection to).

The supervisor runs a plain asyncio loop (it also keeps the registry's
lease alive).  It watches its children with a SIGCHLD handler and polls
them every 100 ms (``os.waitpid(pid, WNOHANG)`` on its own PIDs only: it
reaps each one, leaves no zombies and signals nothing it did not fork).

* SIGINT/SIGTERM: deregister, SIGTERM every worker, wait up to
  ``grace`` + 5 s for them to drain and exit, SIGKILL any that have not,
  then return from ``run()``.  A second signal kills the workers at once.
* a worker that dies (non-zero exit, killed by a signal) while the server
  is not stopping is forked again after a backoff (0.1 s, doubling per
  crash in a row of that worker, up to 10 s), each restart logged at
  WARNING on ``fastrpc.server``; more than 10 restarts within 60 s stop
  the server and ``run()`` raises :class:`WorkersFailed`.  A worker that
  exits with status 0 (it was sent SIGTERM on its own) is not replaced;
  when none is left the supervisor stops.
* a worker that cannot start (its address is taken, ...) at start-up
  stops the whole server; ``run()`` raises :class:`WorkersFailed` with the
  worker's error.
* the supervisor dies (SIGKILL): every worker holds the read end of a pipe
  whose only write end the supervisor has; its EOF makes the workers
  shut down gracefully on their own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, Callable

from ..transport.address import Address, parse_address

__all__ = ["WorkersFailed", "supervise"]

log = logging.getLogger("fastrpc.server")

#: the first restart of a worker waits this long; each crash in a row of
#: the same worker doubles it, up to BACKOFF_MAX
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
#: a worker that ran this long before it died starts its backoff over
STABLE_AFTER = 30.0
#: more than MAX_RESTARTS restarts within RESTART_WINDOW seconds: a crash
#: loop; the server stops and run() raises
MAX_RESTARTS = 10
RESTART_WINDOW = 60.0
#: seconds every worker has to listen at start-up
START_TIMEOUT = 30.0
#: seconds past ``grace`` a worker has to exit after SIGTERM before SIGKILL
STOP_MARGIN = 5.0
#: how often the supervisor polls its children (SIGCHLD wakes it sooner)
POLL_INTERVAL = 0.1
#: the listen backlog of the sockets bound here (as start()'s default)
BACKLOG = 1024

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


class WorkersFailed(RuntimeError):
    """The workers could not start, or kept dying: ``run(workers=N)`` gave up."""


def supervise(
    server: Any,
    addresses: Sequence[str],
    workers: int,
    *,
    grace: float = 5.0,
    use_uvloop: bool | None = None,
    ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve ``server`` from ``workers`` forked processes until SIGINT/SIGTERM
    (what ``Server.run(..., workers=N)`` calls; blocking)."""
    _Supervisor(server, addresses, workers, grace, use_uvloop, ready).run()


def _describe(code: int | None) -> str:
    if code is None:
        return "is gone (reaped elsewhere)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by {name}"
    return f"exited with status {code}"


class _Worker:
    __slots__ = ("pid", "ready", "slot", "started", "status", "status_fd")

    def __init__(self, slot: int, pid: int, status_fd: int, ready: asyncio.Future[None]) -> None:
        self.slot = slot
        self.pid = pid
        self.started = time.monotonic()
        #: read end of the pipe the worker reports on: "ok" once it listens
        self.status_fd: int | None = status_fd
        self.status = b""
        self.ready = ready


class _Supervisor:
    def __init__(
        self,
        server: Any,
        addresses: Sequence[str],
        workers: int,
        grace: float,
        use_uvloop: bool | None,
        ready: Callable[[list[str]], None] | None,
    ) -> None:
        if not hasattr(os, "fork"):
            raise RuntimeError("run(workers=N) needs os.fork (POSIX); use workers=1 here")
        if not addresses:
            raise ValueError("run() needs at least one address")
        self.server = server
        self.addresses = list(addresses)
        self.count = workers
        self.grace = grace
        self.use_uvloop = use_uvloop
        self.on_ready = ready
        #: what each worker's start() gets: URLs (their port fixed) or sockets
        self.targets: list[str | socket.socket] = []
        #: sockets that only hold a port (closed in workers)
        self.reserved: list[socket.socket] = []
        #: listening sockets every worker accepts on
        self.shared: list[socket.socket] = []
        self.unlink: list[str] = []
        self.bound: list[str] = []
        self.workers: dict[int, _Worker] = {}
        self.crashes: dict[int, int] = collections.defaultdict(int)
        self.restarts: collections.deque[float] = collections.deque()
        self.pending: dict[int, asyncio.TimerHandle] = {}
        self.serving = False
        self.stopping = False
        self.failure: BaseException | None = None
        self.loop: Any = None
        self.stop_event: asyncio.Event | None = None
        self.death_r = self.death_w = -1

    # -- binding, in the supervisor, before any fork -------------------------------------

    def _bind(self) -> None:
        reuse_port = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
        for a in self.addresses:
            addr = parse_address(a)
            if addr.kind == "tls" and self.server.ssl is None:
                raise ValueError(f"{a}: a tls:// address needs Server(ssl=an ssl.SSLContext)")
            kind = "tls" if self.server.ssl is not None else "tcp"
            if addr.kind == "unix":
                self.targets.append(self._bind_unix(addr.path))
                self.bound.append(f"unix:{addr.path}")
                continue
            infos = []
            for family, _, _, _, sockaddr in socket.getaddrinfo(
                addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                if (family, sockaddr) not in infos:
                    infos.append((family, sockaddr))
            port = addr.port
            first: tuple | None = None
            for family, sockaddr in infos:
                sock = socket.socket(family, socket.SOCK_STREAM)
                (self.reserved if reuse_port else self.shared).append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == getattr(socket, "AF_INET6", None):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # Bound before SO_REUSEPORT is set: a port some other socket
                # holds (even one with SO_REUSEPORT) fails here, as it does
                # for a single server, instead of being silently shared.
                sock.bind((sockaddr[0], port) + tuple(sockaddr[2:]))
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                else:
                    sock.listen(BACKLOG)
                    self.targets.append(sock)
                name = sock.getsockname()
                port = name[1]  # port 0: every other family and every worker get this one
                first = first or name
            if first is None:
                raise OSError(f"{a}: the host resolves to no address")
            if reuse_port:
                self.targets.append(str(Address(addr.kind, addr.host, port, "")))
            self.bound.append(str(Address(kind, first[0], first[1], "")))

    def _bind_unix(self, path: str) -> socket.socket:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket, as asyncio's create_unix_server does
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.shared.append(sock)
        sock.bind(path)
        self.unlink.append(path)
        sock.listen(BACKLOG)
        return sock

    def _release(self) -> None:
        for sock in self.reserved + self.shared:
            sock.close()
        for path in self.unlink:
            try:
                os.unlink(path)
            except OSError:
                pass
        for fd in (self.death_r, self.death_w):
            if fd >= 0:
                os.close(fd)
        self.death_r = self.death_w = -1

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._bind()
            # Every worker holds the read end; only this process the write
            # end: its EOF tells the workers the supervisor is gone.
            self.death_r, self.death_w = os.pipe()
            loop = asyncio.new_event_loop()
            try:
                asyncio.set_event_loop(loop)
                loop.run_until_complete(self._main(loop))
            finally:
                self._kill_all()
                asyncio.set_event_loop(None)
                loop.close()
        finally:
            self._release()
        if self.failure is not None:
            raise self.failure

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        poller = asyncio.ensure_future(self._poll())
        try:
            for slot in range(self.count):
                self._spawn(slot)
            await self._started()
            if not self.stopping:
                await self.stop_event.wait()
            await self._stop_workers()
        finally:
            poller.cancel()
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    async def _started(self) -> None:
        # Every worker listens -> register -> report; any failure stops all.
        assert self.stop_event is not None
        starting = asyncio.ensure_future(asyncio.gather(*(w.ready for w in self.workers.values())))
        stopped = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait([starting, stopped], timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if self.stopping:
            starting.cancel()
            return
        if not starting.done():
            starting.cancel()
            return self._fail(WorkersFailed(f"the workers did not listen within {START_TIMEOUT:.0f}s"))
        if starting.exception() is not None:
            return self._fail(WorkersFailed(str(starting.exception())))
        self.serving = True
        self.server.addresses = list(self.bound)
        if self.server.registry is not None:
            try:
                await self.server._register(self.bound[0])
            except Exception as exc:  # noqa: BLE001 - told to be listed and cannot be: do not serve
                return self._fail(exc)
        log.info("listening on %s (%d workers)", ", ".join(self.bound), self.count)
        if self.on_ready is not None:
            try:
                self.on_ready(list(self.bound))
            except Exception as exc:  # noqa: BLE001 - raised again by run()
                return self._fail(exc)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            self._reap()

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stop()

    def _on_signal(self) -> None:
        if self.stopping:
            log.warning("signalled again while stopping: killing %d workers", len(self.workers))
            self._signal_all(signal.SIGKILL)
            return
        log.info("stopping %d workers (grace %ss)", len(self.workers), self.grace)
        self.stop()

    def stop(self) -> None:
        self.stopping = True
        for handle in self.pending.values():
            handle.cancel()
        self.pending.clear()
        if self.stop_event is not None:
            self.stop_event.set()

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):  # not reaped yet: the PID is still ours
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    async def _stop_workers(self) -> None:
        if self.server.registry is not None and self.server.record is not None:
            await self.server._deregister()  # out of the registry before anything drains
            self.server.record = None
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + max(self.grace, 0) + STOP_MARGIN
        while self.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            self._reap()
        if self.workers:
            log.warning(
                "%d workers still running %.1fs after SIGTERM: killing them", len(self.workers), max(self.grace, 0) + STOP_MARGIN
            )
        self._kill_all()
        log.info("stopped")

    def _kill_all(self) -> None:
        # SIGKILL and reap whatever is left: no orphans, no zombies.
        self._signal_all(signal.SIGKILL)
        for pid, worker in list(self.workers.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.workers.pop(pid, None)
            self._close_status(worker)

    # -- the children ----------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        loop = self.loop
        status_r, status_w = os.pipe()
        _flush()  # or the child writes what is buffered a second time
        # Blocked across fork: the child sets up its own handlers before it
        # takes any of these (one arriving meanwhile waits for them).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(status_r)
            os.close(status_w)
            raise
        if pid == 0:  # pragma: no cover - the child (the tests see its effects)
            code = 1
            try:
                os.close(status_r)
                inherited = [self.death_w] + [w.status_fd for w in self.workers.values() if w.status_fd is not None]
                code = _worker_main(self, slot, status_w, inherited)
            except BaseException:  # noqa: BLE001 - reported, then the exit status says it
                traceback.print_exc()
            finally:
                _flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(status_w)
        worker = _Worker(slot, pid, status_r, loop.create_future())
        worker.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        self.workers[pid] = worker
        loop.add_reader(status_r, self._on_status, worker)
        log.debug("worker %d started (pid %d)", slot, pid)

    def _on_status(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.status_fd, 4096) if worker.status_fd is not None else b""
        except OSError:
            data = b""
        if data:
            worker.status += data
            return
        self._close_status(worker)
        if worker.ready.done():
            return
        if worker.status == b"ok":
            worker.ready.set_result(None)
            if self.serving:
                log.info("worker %d listens again (pid %d)", worker.slot, worker.pid)
        else:
            why = worker.status.decode(errors="replace") or "it exited"
            worker.ready.set_exception(WorkersFailed(f"worker {worker.slot} (pid {worker.pid}) did not start: {why}"))

    def _close_status(self, worker: _Worker) -> None:
        if worker.status_fd is not None:
            self.loop.remove_reader(worker.status_fd)
            os.close(worker.status_fd)
            worker.status_fd = None

    def _reap(self) -> None:
        for pid, worker in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, -1
            if done == 0:
                continue
            del self.workers[pid]
            self._exited(worker, None if status == -1 else os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int | None) -> None:
        what = _describe(code)
        if self.stopping:
            log.debug("worker %d (pid %d) %s", worker.slot, worker.pid, what)
            return
        if not self.serving:
            # Starting: its status pipe's EOF fails the start (or, when it
            # said it listens and died right after, this does).
            if worker.ready.done() and not worker.ready.cancelled() and worker.ready.exception() is None:
                self._fail(WorkersFailed(f"worker {worker.slot} (pid {worker.pid}) {what} while starting"))
            return
        if code == 0:
            log.info("worker %d (pid %d) exited by itself: not replaced (%d left)", worker.slot, worker.pid, len(self.workers))
            if not self.workers and not self.pending:
                log.info("no worker left: stopping")
                self.stop()
            return
        now = time.monotonic()
        if now - worker.started >= STABLE_AFTER:
            self.crashes[worker.slot] = 0
        self.crashes[worker.slot] += 1
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) > MAX_RESTARTS:
            log.error(
                "worker %d (pid %d) %s: %d restarts within %.0fs, stopping the server",
                worker.slot, worker.pid, what, len(self.restarts) - 1, RESTART_WINDOW,
            )
            self._fail(WorkersFailed(f"workers keep dying (more than {MAX_RESTARTS} restarts within {RESTART_WINDOW:.0f}s)"))
            return
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.crashes[worker.slot] - 1))
        log.warning("worker %d (pid %d) %s: restarting it in %.1fs", worker.slot, worker.pid, what, delay)
        self.pending[worker.slot] = self.loop.call_later(delay, self._respawn, worker.slot)

    def _respawn(self, slot: int) -> None:
        self.pending.pop(slot, None)
        if self.stopping:
            return
        try:
            self._spawn(slot)
        except OSError as exc:
            log.error("could not fork worker %d: %s", slot, exc)
            self._fail(WorkersFailed(f"could not fork worker {slot}: {exc}"))


# -- in the worker ----------------------------------------------------------------------


def _worker_main(sup: _Supervisor, slot: int, status_fd: int, inherited: list[int]) -> int:
    """The forked child: a fresh event loop, the server on the shared
    addresses, until SIGTERM/SIGINT or the supervisor's end.  Returns the
    exit status."""
    # Nothing of the supervisor's loop may fire here: its signal wake-up fd
    # and handlers go, and the loop that is "running" (it forked us) is not.
    signal.set_wakeup_fd(-1)
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    asyncio.events._set_running_loop(None)
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    for sock in sup.reserved:
        sock.close()  # the supervisor holds the port; workers bind their own
    server = sup.server
    server.registry = None  # one record per host: the supervisor's
    from ..transport.loop import new_event_loop

    loop = new_event_loop(sup.use_uvloop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(server, sup.targets, sup.grace, sup.death_r, status_fd, slot))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _serve(
    server: Any, targets: Sequence[str | socket.socket], grace: float, death_fd: int, status_fd: int, slot: int
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def supervisor_gone() -> None:
        loop.remove_reader(death_fd)
        if not stop.is_set():
            log.warning("worker %d: the supervising process is gone, shutting down", slot)
            stop.set()

    loop.add_reader(death_fd, supervisor_gone)
    try:
        await server.start(*targets, reuse_port=True)
    except BaseException as exc:
        _report(status_fd, f"{type(exc).__name__}: {exc}".encode())
        raise
    _report(status_fd, b"ok")
    closed = asyncio.ensure_future(server.serve_forever())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await server.shutdown(grace)
    closed.cancel()
    return 0


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            continue


def _report(fd: int, message: bytes) -> None:
    try:
        os.write(fd, message[:4096])
    except OSError:
        pass
    finally:
        os.close(fd)
