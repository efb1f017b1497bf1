#!/usr/bin/env bash
# Everything CI does, from a fresh clone: a venv, an install with the Cython
# extensions, a check that the compiled modules are the ones loaded, the test
# suite, then the suite again on the pure-Python fallback, then the soak, the
# micro-benchmarks and the benchmark tools once in quick mode.  Exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${FASTRPC_VENV:-.venv-ci}

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

echo "== checking that the compiled extensions are installed and loaded"
FASTRPC_REQUIRE_EXTENSIONS=1 "$PY" - <<'PYEOF'
import fastrpc, fastrpc.wire._codec, fastrpc.wire._framing, fastrpc.core._cores, fastrpc._impl
assert fastrpc.EXTENSIONS_ACTIVE, "compiled modules not active"
assert fastrpc.FrameParser is fastrpc.wire._framing.FrameParser
assert fastrpc._impl.ServerSessionCore is fastrpc.core._cores.ServerSessionCore
print("extensions active:", fastrpc.wire._codec.__file__, fastrpc.wire._framing.__file__, fastrpc.core._cores.__file__)
PYEOF

echo "== test suite, Cython build (mutation fuzz: 150,000 inputs per implementation, plus 150,000 compared across both)"
FASTRPC_REQUIRE_EXTENSIONS=1 FASTRPC_FUZZ_ITERATIONS=150000 "$PY" -m pytest -q -p no:cacheprovider tests

echo "== test suite, pure-Python fallback (FASTRPC_NO_EXTENSIONS=1)"
FASTRPC_NO_EXTENSIONS=1 "$PY" -m pytest -q -p no:cacheprovider tests

echo "== soak, reduced form: 2,000 concurrent connections, 100,000 calls from 2 processes"
"$PY" -m benchmarks.soak --connections 2000 --calls 100000 --processes 2

echo "== micro-benchmarks (smoke run) and ratios"
"$PY" -m pytest -q -p no:cacheprovider benchmarks --benchmark-disable
"$PY" -m benchmarks.micro --quick

echo "== per-call CPU against the floor, no syscalls (smoke run)"
"$PY" -m benchmarks.overhead --quick
FASTRPC_NO_EXTENSIONS=1 "$PY" -m benchmarks.overhead --quick

echo "== head-to-head tool (smoke run)"
"$PY" -m benchmarks.versus "fastrpc Cython: Client (sync)" "floor (uvloop)" --pairs 2 --duration 0.1
