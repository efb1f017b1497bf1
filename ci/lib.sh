# Shared by ci/test.sh and ci/pythons.sh (sourced, not run on its own).

# The wire-layer test files whose `impl` fixture imports the compiled modules
# (`c`) and the pure twins (`py`) directly by name (tests/conftest.py): their
# tests do not depend on which build is installed or which one fastrpc
# selected at import.  A pass on a Cython build runs both their `c` and `py`
# tests; a pure pass would only repeat the `py` ones, byte for byte the same
# code, so the pure passes leave these files out.  Everything else (the
# connection cores, the implementation choice, the layer check and every
# end-to-end test in tests/rpc) runs once per build.
WIRE_TWIN_TESTS=(tests/test_codec.py tests/test_framing.py tests/test_fuzz.py tests/test_writer_refs.py)
PURE_PASS_ARGS=(tests)
for _f in "${WIRE_TWIN_TESTS[@]}"; do
    PURE_PASS_ARGS+=("--ignore=$_f")
done
unset _f

# check_compiled PYTHON: the compiled modules are installed and are the ones
# fastrpc loads (run from outside the source tree).
check_compiled() {
    FASTRPC_REQUIRE_EXTENSIONS=1 "$1" - <<'PYEOF'
import sys
import fastrpc, fastrpc.wire._codec, fastrpc.wire._framing, fastrpc.core._cores, fastrpc._impl
assert fastrpc.EXTENSIONS_ACTIVE, "compiled modules not active"
assert fastrpc.FrameParser is fastrpc.wire._framing.FrameParser
assert fastrpc._impl.ServerSessionCore is fastrpc.core._cores.ServerSessionCore
print("Python", sys.version.split()[0], "extensions active:", fastrpc.wire._codec.__file__, fastrpc.wire._framing.__file__, fastrpc.core._cores.__file__)
PYEOF
}

# check_pure PYTHON: a pure-Python install (built with FASTRPC_NO_EXTENSIONS=1)
# has no compiled module at all and runs on the twins.
check_pure() {
    "$1" - <<'PYEOF'
import importlib.util, sys
import fastrpc, fastrpc._impl
for name in ("fastrpc.wire._codec", "fastrpc.wire._framing", "fastrpc.core._cores"):
    assert importlib.util.find_spec(name) is None, f"pure build, yet {name} is installed"
assert not fastrpc.EXTENSIONS_ACTIVE and fastrpc.IMPLEMENTATION == "py"
assert fastrpc._impl.ServerSessionCore.__module__ == "fastrpc.core._cores_py"
print("Python", sys.version.split()[0], "pure build: no compiled modules installed, fastrpc", fastrpc.__file__)
PYEOF
}

# check_requirements PYTHON: the installed distribution needs uvloop and
# nothing else at run time (msgpack is for the tests and benchmarks only).
check_requirements() {
    "$1" - <<'PYEOF'
import re
from importlib.metadata import requires
core = [r for r in (requires("fastrpc") or []) if "extra ==" not in r]
names = sorted(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower() for r in core)
assert names == ["uvloop"], f"runtime requirements should be uvloop alone, not {core}"
print("runtime requirements:", core)
PYEOF
}

# seconds_since START: whole seconds elapsed since START (a `date +%s`).
seconds_since() {
    echo $(( $(date +%s) - $1 ))
}
