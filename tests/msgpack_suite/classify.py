"""pytest plugin for run.py: skips the tests on the documented list of
unsupported features, and writes every test's outcome to a JSON file.

The list is the documentation of what fastrpc's codec deliberately lacks
compared with msgpack-python (docs/types.md, "msgpack compatibility"); each
entry names the feature.  A test not on the list that touches such a feature
reaches the shim's ShimUnsupported and counts as failing, so the list stays
complete.
"""

from __future__ import annotations

import json
import os

import pytest

STREAMING = "streaming Unpacker/Packer API (headers, read_bytes, tell, skip, read_size, max_buffer_size)"
RAW = "raw=True / use_bin_type=False (the old raw str format): fastrpc always uses str8 and bin"
PAIRS = "object_pairs_hook / list_hook"
STRICT_KEY = "strict_map_key (fastrpc accepts every hashable map key)"
UNICODE_ERRORS = "unicode_errors (fastrpc refuses invalid UTF-8, always)"
SINGLE_FLOAT = "use_single_float (fastrpc always writes float64)"
STRICT_TYPES = "strict_types (fastrpc encodes subclasses as their base type)"
TS_STRICT = "an ext -1 that is not a valid timestamp decodes as ExtType(-1, data) in fastrpc; msgpack raises"

#: "file.py::test" -> reason.  Keep in step with docs/types.md.
UNSUPPORTED = {
    "test_buffer.py::test_packer_getbuffer": STREAMING,
    "test_case.py::test_fixraw": RAW,
    "test_case.py::test_raw16": RAW,
    "test_case.py::test_raw32": RAW,
    "test_except.py::test_raise_from_object_hook": PAIRS,
    "test_except.py::test_strict_map_key": STRICT_KEY,
    "test_limits.py::test_array_header": STREAMING,
    "test_limits.py::test_map_header": STREAMING,
    "test_limits.py::test_auto_max_array_len": STREAMING,
    "test_limits.py::test_auto_max_map_len": STREAMING,
    "test_obj.py::test_decode_pairs_hook": PAIRS,
    "test_obj.py::test_only_one_obj_hook": PAIRS,
    "test_obj.py::test_array_hook": PAIRS,
    "test_obj.py::test_an_exception_in_objecthook2": PAIRS,
    "test_pack.py::testIgnoreUnicodeErrors": RAW,
    "test_pack.py::testStrictUnicodeUnpack": RAW,
    "test_pack.py::testIgnoreErrorsPack": UNICODE_ERRORS,
    "test_pack.py::testPackFloat": SINGLE_FLOAT,
    "test_pack.py::testArraySize": STREAMING,
    "test_pack.py::test_manualreset": STREAMING,
    "test_pack.py::testMapSize": STREAMING,
    "test_pack.py::test_odict": PAIRS,
    "test_pack.py::test_pairlist": STREAMING,
    "test_format.py::testSimpleValue": RAW,
    "test_format.py::testFixnum": RAW,
    "test_format.py::testFixArray": RAW,
    "test_format.py::testFixRaw": RAW,
    "test_format.py::testFixMap": RAW,
    "test_format.py::testUnsignedInt": RAW,
    "test_format.py::testSignedInt": RAW,
    "test_format.py::testRaw": RAW,
    "test_format.py::testArray": RAW,
    "test_format.py::testMap": RAW,
    "test_memoryview.py::test_fixstr_from_byte": RAW,
    "test_memoryview.py::test_fixstr_from_float": RAW,
    "test_memoryview.py::test_str16_from_byte": RAW,
    "test_memoryview.py::test_str16_from_float": RAW,
    "test_memoryview.py::test_str32_from_byte": RAW,
    "test_memoryview.py::test_str32_from_float": RAW,
    "test_newspec.py::test_str8": RAW,
    "test_read_size.py::test_read_array_header": STREAMING,
    "test_read_size.py::test_read_map_header": STREAMING,
    "test_read_size.py::test_incorrect_type_array": STREAMING,
    "test_read_size.py::test_incorrect_type_map": STREAMING,
    "test_read_size.py::test_correct_type_nested_array": STREAMING,
    "test_read_size.py::test_incorrect_type_nested_map": STREAMING,
    "test_seq.py::test_exceeding_unpacker_read_size": STREAMING,
    "test_sequnpack.py::test_foobar": STREAMING,
    "test_sequnpack.py::test_foobar_skip": STREAMING,
    "test_sequnpack.py::test_maxbuffersize": STREAMING,
    "test_sequnpack.py::test_maxbuffersize_file": STREAMING,
    "test_sequnpack.py::test_readbytes": STREAMING,
    "test_sequnpack.py::test_unpack_tell": STREAMING,
    "test_stricttype.py::test_namedtuple": STRICT_TYPES,
    "test_stricttype.py::test_tuple": STRICT_TYPES,
    "test_stricttype.py::test_tuple_ext": STRICT_TYPES,
    "test_timestamp.py::test_unpack_timestamp": TS_STRICT,
    "test_unpack.py::test_unpack_array_header_from_file": STREAMING,
    "test_unpack.py::test_unpacker_hook_refcnt": PAIRS,
    "test_unpack.py::test_unpacker_tell": STREAMING,
    "test_unpack.py::test_unpacker_tell_read_bytes": STREAMING,
}

_results = {}


def _key(item):
    path, _, name = item.nodeid.partition("::")
    return os.path.basename(path) + "::" + name.split("[")[0]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FASTRPC_MSGPACK_SUITE_NO_LIST"):  # to re-check the list: run everything
        return
    for item in items:
        reason = UNSUPPORTED.get(_key(item))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"unsupported: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        kind = "unsupported" if "unsupported:" in reason else "skipped"
        _results.setdefault(item.nodeid, (kind, reason))
    elif report.failed:
        _results[item.nodeid] = ("failed", str(report.longreprtext)[-2000:])
    elif report.when == "call":
        _results.setdefault(item.nodeid, ("passed", ""))


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("FASTRPC_MSGPACK_SUITE_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f, indent=1, sort_keys=True)


def pytest_configure(config):
    # Guard: the module under test must be the shim, never the real msgpack.
    import msgpack

    shim = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
    if not os.path.abspath(msgpack.__file__).startswith(shim + os.sep):
        raise pytest.UsageError(f"msgpack imported from {msgpack.__file__}, not from the shim in {shim}")
