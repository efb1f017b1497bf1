"""``fastrpc serve MODULE:OBJECT``: serve what a module names.

What ``OBJECT`` may be (``docs/cli.md``), after the module is imported
with the app directory (default: the current one) first on ``sys.path``:

* a :class:`fastrpc.Server`: served as it is (configure it in its own
  constructor: ``--registry``, ``--access-log``, ``--metrics`` and
  ``--service`` are refused for it);
* a class: instantiated with no arguments, its public methods registered
  as a service named after the class (``--service`` renames it);
* a function (or other callable that is not a class): a factory, called
  with no arguments; it returns a :class:`fastrpc.Server` (used as such)
  or an object (registered as below);
* any other object: an instance whose public methods become a service
  named after its class.

``OBJECT`` may be dotted (``app:services.arith``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import sys
import traceback
from typing import Any, Dict, List, Optional

import fastrpc

from .common import EXIT_FAILED, EXIT_OK, CliError

DEFAULT_BIND = "tcp://127.0.0.1:7000"
DEFAULT_METRICS = "127.0.0.1:9100"


def load_object(spec: str, app_dir: str = ".") -> Any:
    """The object ``MODULE:OBJECT`` names (a :class:`CliError` saying what
    is wrong otherwise)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise CliError(
            f"{spec!r}: expected MODULE:OBJECT, for instance myapp.services:Arith "
            "(a class, an object, a fastrpc.Server or a function returning one)"
        )
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise CliError(
                f"cannot import {module_name!r}: no module named {missing!r} (looked in {path} and sys.path)",
                hint="run from the folder that holds it, or give --app-dir",
            ) from None
        raise CliError(f"importing {module_name!r} failed:\n{traceback.format_exc().rstrip()}") from None
    except Exception:  # noqa: BLE001 - the module's own error, shown whole
        raise CliError(f"importing {module_name!r} failed:\n{traceback.format_exc().rstrip()}") from None
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("_")]
            import difflib

            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            raise CliError(
                f"{walked!r} has no attribute {part!r}",
                hint=("did you mean " + " or ".join(close) + "?") if close else "",
            ) from None
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    return obj


def _server_options(args: Any) -> Dict[str, Any]:
    """The ``fastrpc.Server`` arguments the command line sets."""
    opts: Dict[str, Any] = {}
    if args.registry:
        if not args.name:
            raise CliError("--registry needs --name (the name clients look the service up by)")
        opts.update(registry=args.registry, name=args.name, weight=args.weight, version=args.version)
    elif args.name or args.version or args.weight != 1:
        raise CliError("--name, --version and --weight describe the registry record: they need --registry")
    if args.access_log:
        opts["access_log"] = True
    if args.debug:
        opts["debug"] = True
    return opts


def _is_factory(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj) or isinstance(obj, functools.partial)


def build_server(obj: Any, spec: str, args: Any, metrics: Any = None) -> Any:
    """A :class:`fastrpc.Server` from what ``spec`` named (module docstring)."""
    opts = _server_options(args)
    if metrics is not None:
        opts["metrics"] = metrics

    def as_is(server: Any, what: str) -> Any:
        given = [flag for flag, on in (("--registry", "registry" in opts), ("--access-log", args.access_log),
                                       ("--metrics", metrics is not None), ("--debug", args.debug),
                                       ("--service", bool(args.service))) if on]
        if given:
            raise CliError(
                f"{spec} {what} an already built fastrpc.Server: {', '.join(given)} cannot change it",
                hint="set them in its constructor (Server(registry=..., access_log=True, metrics=...)), "
                "or name the service class instead",
            )
        return server

    if inspect.ismodule(obj):
        raise CliError(f"{spec} is a module: name a class, an object, a fastrpc.Server or a factory in it")
    if isinstance(obj, fastrpc.Server):
        return as_is(obj, "is")
    if inspect.isclass(obj):
        if issubclass(obj, fastrpc.Server):
            raise CliError(f"{spec} is a Server class: name an instance of it, or a function that returns one")
        try:
            obj = obj()
        except TypeError as exc:
            raise CliError(
                f"cannot instantiate {spec} with no arguments: {exc}",
                hint="write a function that builds it (or a fastrpc.Server) and name that",
            ) from None
    elif _is_factory(obj):
        try:
            obj = obj()
        except TypeError as exc:
            raise CliError(f"calling the factory {spec} with no arguments failed: {exc}") from None
        if inspect.isawaitable(obj):
            close = getattr(obj, "close", None)
            if close is not None:
                close()
            raise CliError(f"{spec} is an async function: a factory must be a plain function")
        if isinstance(obj, fastrpc.Server):
            return as_is(obj, "returned")
        if inspect.isclass(obj) or inspect.ismodule(obj) or obj is None:
            raise CliError(f"the factory {spec} returned {obj!r}: it must return a fastrpc.Server or a service object")
    server = fastrpc.Server(**opts)
    try:
        server.register(obj, args.service or None)
    except ValueError as exc:
        raise CliError(f"{spec}: {exc}") from None
    return server


def _logging(args: Any) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.access_log:
        logging.getLogger("fastrpc.access").setLevel(logging.INFO)


def serve(args: Any) -> int:
    """``fastrpc serve``: serve until SIGINT/SIGTERM; exit 0 after a clean stop."""
    _logging(args)
    workers: Optional[int] = args.workers
    if workers is not None and workers < 0:
        raise CliError("--workers must be >= 0 (0: one per CPU)")
    metrics = None
    if args.metrics is not None:
        if workers != 1:
            raise CliError("--metrics serves one process's numbers: it cannot be used with --workers other than 1")
        try:
            from fastrpc.middleware.metrics import ServerMetrics

            metrics = ServerMetrics()
        except ImportError as exc:
            raise CliError(str(exc)) from None
    obj = load_object(args.app, args.app_dir)
    server = build_server(obj, args.app, args, metrics)
    binds: List[str] = args.bind or [DEFAULT_BIND]
    methods = [m for m in server.methods if not m.startswith("fastrpc.")]
    print(f"fastrpc {fastrpc.__version__}: serving {args.app}: {', '.join(methods)}", flush=True)

    def ready(addresses: List[str]) -> None:
        for a in addresses:
            print(f"listening on {a}", flush=True)
        if metrics is not None:
            try:
                host, port = metrics.serve(args.metrics)
            except (OSError, ValueError) as exc:
                raise CliError(f"cannot serve metrics on {args.metrics}: {getattr(exc, 'strerror', None) or exc}") from None
            print(f"metrics on http://{host}:{port}/metrics", flush=True)
        count = workers if workers else os.cpu_count() or 1
        extra = f" ({count} workers)" if count > 1 else ""
        print(f"ready{extra}; SIGINT (Ctrl+C) or SIGTERM stops it", flush=True)

    try:
        server.run(*binds, grace=args.grace, workers=workers, ready=ready)
    except CliError:
        raise
    except OSError as exc:
        raise CliError(f"cannot listen on {', '.join(binds)}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"cannot serve on {', '.join(binds)}: {exc}") from None
    except RuntimeError as exc:  # WorkersFailed and the like
        raise CliError(str(exc), EXIT_FAILED) from None
    except Exception as exc:  # noqa: BLE001 - the registry's client raises its own errors
        if not args.registry:
            raise
        raise CliError(f"cannot register with {args.registry}: {type(exc).__name__}: {exc}") from None
    finally:
        if metrics is not None:
            metrics.stop_serving()
    print("stopped", flush=True)
    return EXIT_OK


__all__ = ["DEFAULT_BIND", "build_server", "load_object", "serve"]
