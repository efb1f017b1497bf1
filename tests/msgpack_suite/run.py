"""Run msgpack-python's own test suite against fastrpc's codec.

Usage::

    python tests/msgpack_suite/run.py [--version 1.1.2] [--json OUT] [-- PYTEST ARGS]

msgpack's tests are not copied into this repository.  The first run
downloads the msgpack sdist with pip (``pip download --no-binary :all:
--no-deps msgpack==VERSION``) into a cache directory
(``$FASTRPC_MSGPACK_SUITE_CACHE``, default ``~/.cache/fastrpc/msgpack-suite``)
and extracts only its ``test/*.py`` there; later runs reuse it.  pytest then
runs those files in a subprocess with ``shim/`` first on ``sys.path``: its
module named ``msgpack`` maps msgpack's names onto fastrpc (see
``shim/msgpack/__init__.py``), and ``classify.py`` skips the tests on the
documented list of features fastrpc deliberately lacks.

Exit status: 0 when no test that ran failed, 1 when some did, 3 when the
sdist could not be had (offline): the line starting ``UNAVAILABLE:`` says why.
The last line is the tally: ``passed=N unsupported=N skipped=N failed=N``.
Whichever build ``FASTRPC_NO_EXTENSIONS`` selects is the one tested.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_VERSION = "1.1.2"
UNAVAILABLE = 3


def cache_dir() -> Path:
    env = os.environ.get("FASTRPC_MSGPACK_SUITE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fastrpc" / "msgpack-suite"


def _download(version: str, cache: Path) -> Path:
    sdist = cache / f"msgpack-{version}.tar.gz"
    if sdist.exists():
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
           "--no-build-isolation", "--disable-pip-version-check", "-q", f"msgpack=={version}", "-d", str(cache)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"pip download failed: {exc}") from None
    if proc.returncode != 0 or not sdist.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pip download of msgpack=={version} failed: {tail[0]}")
    return sdist


def locate_tests(version: str) -> Path:
    """The directory of msgpack's test files (downloaded and extracted once)."""
    cache = cache_dir()
    tests = cache / f"msgpack-{version}" / "test"
    if tests.is_dir() and any(tests.glob("test_*.py")):
        return tests
    sdist = _download(version, cache)
    prefix = f"msgpack-{version}/test/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".py")
                   and "/" not in m.name[len(prefix):] and ".." not in m.name]
        if not members:
            raise RuntimeError(f"{sdist.name} has no {prefix}*.py")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            for m in members:
                tar.extract(m, tmp)
            tests.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / prefix.rstrip("/"), tests)
    return tests


def run(version: str, pytest_args: list) -> dict:
    tests = locate_tests(version)
    ini = tests.parent / "pytest-fastrpc.ini"
    ini.write_text("[pytest]\n")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        results_path = f.name
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE / "shim"), str(HERE), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["FASTRPC_MSGPACK_SUITE_RESULTS"] = results_path
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "classify",
           "-c", str(ini), "--rootdir", str(tests), str(tests), *pytest_args]
    proc = subprocess.run(cmd, env=env, cwd=str(tests))
    try:
        with open(results_path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    finally:
        os.unlink(results_path)
    if not results and proc.returncode != 0:
        raise SystemExit(f"pytest exited with {proc.returncode} and reported nothing")
    return results


def tally(results: dict) -> dict:
    counts = {"passed": 0, "unsupported": 0, "skipped": 0, "failed": 0}
    for kind, _ in results.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=DEFAULT_VERSION, help="msgpack version whose tests to run")
    parser.add_argument("--json", help="write every test's outcome here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    try:
        results = run(args.version, args.pytest_args)
    except RuntimeError as exc:
        print(f"UNAVAILABLE: {exc}")
        return UNAVAILABLE
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    for nodeid, (kind, detail) in sorted(results.items()):
        if kind == "failed":
            print(f"FAILED {nodeid}\n{detail}\n")
    counts = tally(results)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
