#!/usr/bin/env bash
# Everything CI does, from a fresh clone, in this order (each step prints a
# `== ...` header; any failure makes the script exit non-zero):
#
#   1. a venv (.venv-ci) with the default python3 and a non-editable install
#      of ".[test]" with the Cython extensions;
#   2. a check that the compiled modules are the ones loaded and that uvloop
#      is the only runtime dependency; a check that the sdist carries the
#      Cython sources;
#   3. the whole test suite on the Cython build (every wire and core test on
#      both implementations; mutation fuzz 150,000 inputs per implementation
#      plus 150,000 compared across both);
#   4. the part of the suite that depends on the build, on the pure-Python
#      fallback (FASTRPC_NO_EXTENSIONS=1): connection cores, implementation
#      choice, layers and every end-to-end test.  The wire twins' tests
#      (ci/lib.sh, WIRE_TWIN_TESTS) import both implementations by name and
#      ran on both in step 3, so each test runs once per build;
#   5. the soak, reduced form;
#   6. the micro-benchmarks (smoke run) and their ratios;
#   7. the per-call CPU tool (smoke run), both builds, and the per-feature
#      cost tool (smoke run);
#   8. the head-to-head tool (smoke run);
#   9. ci/pythons.sh: the oldest and newest CPython pyenv provides (3.9 and
#      3.13 on CI), each on a Cython build and a pure build in fresh venvs:
#      the compiled-modules check, then the suite in reduced form (see the
#      header of ci/pythons.sh).  All of its passes run even if one fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh

PYTHON=${PYTHON:-python3}
VENV=${FASTRPC_VENV:-.venv-ci}

# Real components the tests start themselves, on loopback ports: etcd
# (Debian's etcd-server; the registry tests run one per test).  Here a
# missing one fails those tests instead of skipping them.
if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd-server (the registry tests start a real etcd)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q etcd-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q etcd-server >/dev/null; }
fi
export FASTRPC_REQUIRE_ETCD=1
# Go (Debian's golang-go): the interop tests build a client with Go's own
# net/rpc/jsonrpc (standard library only, no network) and call the server.
if ! command -v go >/dev/null 2>&1; then
    echo "== installing golang-go (the interop tests build a Go net/rpc/jsonrpc client)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q golang-go >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q golang-go >/dev/null; }
fi
export FASTRPC_REQUIRE_GO=1
# Chromium (Debian's chromium): the HTTP gateway's test takes a headless
# screenshot of the debug page (GET /debug/rpc).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
    echo "== installing chromium (the HTTP gateway test screenshots the debug page)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
export FASTRPC_REQUIRE_CHROMIUM=1

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
VENV=$(cd "$VENV" && pwd)
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# Non-editable install: this is what users get, extensions included.
"$PY" -m pip install -q ".[test]"

# Run from a folder outside the source tree, so `import fastrpc` finds the
# installed package (with its compiled modules), not the source checkout.
ROOT=$(pwd)
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT
cp -r tests benchmarks pyproject.toml "$RUN"/
cd "$RUN"

echo "== checking that the compiled extensions are installed and loaded, and that uvloop is the only runtime dependency"
check_compiled "$PY"
check_requirements "$PY"

# The layer test reads the Cython sources too; the installed package has
# none, so it reads them from the checkout.
export FASTRPC_SOURCE="$ROOT"

echo "== the source distribution carries the Cython sources (a wheel built from it is compiled)"
"$PY" -m pip install -q build
"$PY" -m build --sdist --outdir "$RUN/sdist" "$ROOT" >/dev/null
"$PY" - "$RUN"/sdist/*.tar.gz <<'PYEOF'
import sys, tarfile
names = tarfile.open(sys.argv[1]).getnames()
want = ["fastrpc/wire/_codec.pyx", "fastrpc/wire/_codec.pxd", "fastrpc/wire/_framing.pyx",
        "fastrpc/wire/_framing.pxd", "fastrpc/core/_cores.pyx", "fastrpc/core/_cores.pxd", "tests/conftest.py"]
missing = [w for w in want if not any(n.endswith("/" + w) for n in names)]
assert not missing, f"sdist lacks {missing}"
stray = [n for n in names if n.endswith((".c", ".so", ".html"))]
assert not stray, f"sdist carries build output {stray}"
print(sys.argv[1].rsplit("/", 1)[-1], "has", len(names), "entries, the Cython sources among them")
PYEOF

echo "== test suite, Cython build (mutation fuzz: 150,000 inputs per implementation, plus 150,000 compared across both)"
FASTRPC_REQUIRE_EXTENSIONS=1 FASTRPC_FUZZ_ITERATIONS=150000 "$PY" -m pytest -q -p no:cacheprovider tests

echo "== test suite, pure-Python fallback (FASTRPC_NO_EXTENSIONS=1): cores, implementation choice, layers, end-to-end (the wire twins' tests ran above)"
FASTRPC_NO_EXTENSIONS=1 "$PY" -m pytest -q -p no:cacheprovider "${PURE_PASS_ARGS[@]}"

echo "== soak, reduced form: 2,000 concurrent connections, 100,000 calls from 2 processes"
"$PY" -m benchmarks.soak --connections 2000 --calls 100000 --processes 2

echo "== micro-benchmarks (smoke run) and ratios"
"$PY" -m pytest -q -p no:cacheprovider benchmarks --benchmark-disable
"$PY" -m benchmarks.micro --quick

echo "== per-call CPU against the floor, no syscalls, what each optional feature adds, hedging's tail (smoke runs)"
"$PY" -m benchmarks.overhead --quick
FASTRPC_NO_EXTENSIONS=1 "$PY" -m benchmarks.overhead --quick
"$PY" -m benchmarks.features --quick
"$PY" -m benchmarks.hedging --quick
"$PY" -m benchmarks.tls --quick
"$PY" -m benchmarks.compression --quick

echo "== balancing: pick costs, W2 through a balanced client, a slow server's share; W4 with 1 and 2 workers (smoke runs)"
"$PY" -m benchmarks.balancing --quick
"$PY" -m benchmarks.balanced --quick
"$PY" -m benchmarks.workers --quick

echo "== the HTTP gateway against aiohttp (smoke run)"
"$PY" -m benchmarks.gateway --quick

echo "== head-to-head tool (smoke run)"
"$PY" -m benchmarks.versus "fastrpc Cython: Client (sync)" "floor (uvloop)" --pairs 2 --duration 0.1

# Step 9: its own headers, venvs and summary.
bash "$ROOT/ci/pythons.sh"
