#!/usr/bin/env bash
# The cross-library benchmark in one command: installs what it needs (a venv
# with fastrpc and the Python peers, Debian's golang-go for the Go peers when
# it can), builds the Go peers, then runs benchmarks/harness.py.  Extra
# arguments go to the harness (e.g. --duration 2 --runs 5, --only fastrpc).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${FASTRPC_BENCH_VENV:-.venv-bench}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -r benchmarks/peers/requirements.txt matplotlib psutil setuptools "Cython>=3,<4"
# The peers run from the checkout (python -m benchmarks.peers...), so the
# fastrpc they import is this source tree: build its extensions in place.
"$PY" setup.py -q build_ext --inplace

if ! command -v go >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing golang-go (Debian) for the Go net/rpc peers"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null \
            || echo "could not install golang-go: the Go peers will be reported as not run"
    else
        echo "go is not installed and cannot be installed here: the Go peers will be reported as not run"
    fi
fi
if command -v go >/dev/null 2>&1; then
    sh benchmarks/go/build.sh
fi

"$PY" - <<'PYEOF'
import fastrpc
assert fastrpc.EXTENSIONS_ACTIVE, "the Cython extensions did not build"
print("fastrpc", fastrpc.__version__, "extensions active:", fastrpc.EXTENSIONS_ACTIVE)
PYEOF
exec "$PY" -m benchmarks.harness "$@"
