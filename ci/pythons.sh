#!/usr/bin/env bash
# The claim "Python >= 3.9" checked: the test suite, in a reduced but real
# form, on the oldest and the newest CPython that pyenv provides (3.9 and 3.13
# on CI), on both builds, each in its own fresh venv with a non-editable
# `pip install ".[test]"` like ci/test.sh's main pass:
#
#   1. the four installs (per Python: a Cython build, and a pure build with
#      FASTRPC_NO_EXTENSIONS=1 at build time), side by side, each from its
#      own clean copy of the sources, with the pip the venv comes with (what
#      a user of that Python has; the oldest, pip 23.0 on 3.9, must do);
#   2. per Python, Cython build: the check that the compiled modules are the
#      ones loaded, then the suite in reduced form: every wire and core test
#      on both implementations (mutation fuzz: 20,000 inputs per
#      implementation instead of 150,000), and the end-to-end tests but
#      test_kill.py and test_chaos.py (SIGKILLed processes, the fault-injecting
#      proxy: the main pass runs them), on asyncio and uvloop, with 5,000
#      calls in the load tests instead of 100,000;
#   3. per Python, pure build: the check that nothing compiled is installed,
#      then with FASTRPC_NO_EXTENSIONS=1 the part of the suite that depends
#      on the build (connection cores, implementation choice, layers) and the
#      same end-to-end tests as step 2 (the wire twins' tests ran in step 2).
#
# A failing pass does not stop the others: all run, a summary lists the
# failures and the script exits non-zero.  Called by ci/test.sh; runs on its
# own too.  FASTRPC_CI_PYTHONS="3.10.13 3.12.1" picks other pyenv versions.
# Without pyenv there is nothing to run: it says so loudly and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. ci/lib.sh

FUZZ=20000
LOAD_CALLS=5000
# End-to-end modules left to the main pass: kill and chaos (about 8 s a
# pass between them), and the integration suites of real components and
# processes (etcd, DNS, forked workers, the CLI in subprocesses, the HTTP
# gateway with Chromium, each protocol's abuse cases, msgpack's own suite),
# which the main pass runs on both builds; here they would double CI's time
# for what the interpreter version changes least.
SKIP_E2E=(
    --ignore=tests/rpc/test_kill.py --ignore=tests/rpc/test_chaos.py
    --ignore=tests/rpc/test_discovery.py --ignore=tests/rpc/test_registry.py --ignore=tests/rpc/test_dns.py
    --ignore=tests/rpc/test_workers.py --ignore=tests/rpc/test_cli.py --ignore=tests/rpc/test_http.py
    --ignore=tests/rpc/test_interop_abuse.py --deselect=tests/test_codec_types.py::test_msgpack_suite
)

# -- which interpreters -------------------------------------------------------

pyenv_root() {
    if command -v pyenv >/dev/null 2>&1; then
        pyenv root
    elif [ -n "${PYENV_ROOT:-}" ] && [ -d "$PYENV_ROOT/versions" ]; then
        echo "$PYENV_ROOT"
    elif [ -d "$HOME/.pyenv/versions" ]; then
        echo "$HOME/.pyenv"
    else
        return 1
    fi
}

if ! PYENV=$(pyenv_root); then
    bar=$(printf '%072d' 0 | tr 0 '!')
    printf '%s\n%s\n%s\n%s\n' "$bar" \
        "SKIPPED: pyenv is not installed: the oldest and newest CPython were NOT tested." \
        "Only the default python3 was; the README's 'Python >= 3.9' is unchecked on this machine." \
        "$bar"
    exit 0
fi

# The minimum from pyproject.toml (requires-python = ">=3.9").
MIN=$(sed -n 's/^requires-python *= *">= *\([0-9][0-9]*\.[0-9][0-9]*\)".*/\1/p' pyproject.toml)
if [ -z "$MIN" ]; then
    echo "ci/pythons.sh: cannot read requires-python from pyproject.toml" >&2
    exit 1
fi

if [ -n "${FASTRPC_CI_PYTHONS:-}" ]; then
    read -r -a VERSIONS <<<"$FASTRPC_CI_PYTHONS"
else
    # CPython 3 releases pyenv has (3.9.18, not 3.13t, 3.14-dev or pypy),
    # at or above the minimum: the newest patch of the oldest minor, and the
    # newest of all.
    mapfile -t ALL < <(
        for d in "$PYENV"/versions/3.*; do
            v=${d##*/}
            [[ $v =~ ^3\.([0-9]+)\.[0-9]+$ ]] || continue
            [ "${BASH_REMATCH[1]}" -ge "${MIN#3.}" ] || continue
            [ -x "$d/bin/python" ] && echo "$v"
        done | sort -V
    )
    if [ "${#ALL[@]}" -eq 0 ]; then
        echo "ci/pythons.sh: pyenv ($PYENV) has no CPython >= $MIN" >&2
        exit 1
    fi
    oldest_minor=$(echo "${ALL[0]}" | cut -d. -f1,2)
    if [ "$oldest_minor" != "$MIN" ]; then
        echo "ci/pythons.sh: pyproject.toml says Python >= $MIN, but the oldest CPython pyenv has is ${ALL[0]}: install $MIN (pyenv install $MIN) or set FASTRPC_CI_PYTHONS" >&2
        exit 1
    fi
    oldest=$(printf '%s\n' "${ALL[@]}" | grep "^$MIN\." | tail -n 1)
    newest=${ALL[-1]}
    VERSIONS=("$oldest")
    [ "$newest" != "$oldest" ] && VERSIONS+=("$newest")
fi

# -- fresh venvs, installed side by side ------------------------------------------

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/run"
cp -r tests pyproject.toml "$WORK/run"/

FAILED=()

# install VERSION BUILD: a fresh venv $WORK/venv-VERSION-BUILD with fastrpc[test]
# installed (not editable) from a clean copy of the sources; output to a log.
install() {
    local version=$1 build=$2
    local name=$version-$build
    local src=$WORK/src-$name venv=$WORK/venv-$name
    local python=$PYENV/versions/$version/bin/python
    local no_ext=""
    [ "$build" = pure ] && no_ext=1
    mkdir "$src" || return 1
    # Only what the build reads; no build/ nor in-place .c/.so from another run.
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.c' --exclude='*.so' --exclude='*.html' \
        -cf - fastrpc setup.py pyproject.toml README.md | tar -C "$src" -xf - || return 1
    "$python" -m venv "$venv" || return 1
    local t0=$SECONDS
    FASTRPC_NO_EXTENSIONS=$no_ext "$venv/bin/python" -m pip install -q "$src[test]" || return 1
    echo "$name: pip install took $((SECONDS - t0)) s"
}

JOBS=()
for version in "${VERSIONS[@]}"; do
    for build in cython pure; do
        JOBS+=("$version-$build")
    done
done

echo "== CPython ${VERSIONS[*]} (oldest and newest >= $MIN from pyenv, $PYENV): ${#JOBS[@]} fresh venvs, pip install \".[test]\" with each venv's own pip, Cython build and pure build (FASTRPC_NO_EXTENSIONS=1), all at once"
declare -A INSTALLED=()
start=$(date +%s)
pids=()
for job in "${JOBS[@]}"; do
    install "${job%-*}" "${job##*-}" >"$WORK/install-$job.log" 2>&1 &
    pids+=("$!")
done
for k in "${!JOBS[@]}"; do
    job=${JOBS[k]}
    if wait "${pids[k]}"; then
        INSTALLED[$job]=1
    else
        echo "install FAILED: CPython ${job%-*}, ${job##*-} build; its output:"
        cat "$WORK/install-$job.log"
        FAILED+=("CPython ${job%-*}, ${job##*-} build: pip install")
    fi
done
cat "$WORK"/install-*.log | grep -F ': pip install took' || true
echo "(installs took $(seconds_since "$start") s)"

# -- the passes -------------------------------------------------------------------

cd "$WORK/run"  # outside the source tree: `import fastrpc` is the installed one

# run_pass LABEL COMMAND...: a header, the command, its time; failure recorded.
run_pass() {
    local label=$1
    shift
    echo "== $label"
    local t0 rc=0
    t0=$(date +%s)
    "$@" || rc=$?
    echo "($label: $(seconds_since "$t0") s)"
    [ "$rc" -eq 0 ] || FAILED+=("$label (exit $rc)")
    return "$rc"
}

for version in "${VERSIONS[@]}"; do
    job=$version-cython
    if [ -n "${INSTALLED[$job]:-}" ]; then
        py=$WORK/venv-$job/bin/python
        run_pass "CPython $version, Cython build: checking that the compiled extensions are installed and loaded" \
            check_compiled "$py" &&
            run_pass "CPython $version, Cython build: wire and core tests on both implementations (fuzz $FUZZ), end-to-end but kill and chaos (load $LOAD_CALLS calls)" \
                env FASTRPC_REQUIRE_EXTENSIONS=1 FASTRPC_FUZZ_ITERATIONS=$FUZZ FASTRPC_LOAD_CALLS=$LOAD_CALLS \
                "$py" -m pytest -q -p no:cacheprovider tests "${SKIP_E2E[@]}"
    fi
    job=$version-pure
    if [ -n "${INSTALLED[$job]:-}" ]; then
        py=$WORK/venv-$job/bin/python
        run_pass "CPython $version, pure build: checking that nothing compiled is installed" \
            check_pure "$py" &&
            run_pass "CPython $version, pure build (FASTRPC_NO_EXTENSIONS=1): cores, implementation choice, layers, end-to-end but kill and chaos (load $LOAD_CALLS calls)" \
                env FASTRPC_NO_EXTENSIONS=1 FASTRPC_LOAD_CALLS=$LOAD_CALLS \
                "$py" -m pytest -q -p no:cacheprovider "${PURE_PASS_ARGS[@]}" "${SKIP_E2E[@]}"
    fi
done

echo "== CPython ${VERSIONS[*]}: summary"
if [ "${#FAILED[@]}" -ne 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all passed on CPython ${VERSIONS[*]}, both builds"
