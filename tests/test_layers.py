"""The package's layers import in one direction only.

Every module of ``fastrpc`` (``.py``, ``.pyx`` and ``.pxd``) belongs to a
layer, by the folder it is in; a module may import its own layer and the
layers below, never one above.  ``server`` and ``client`` are peers that
never import each other, and only the command line (a user of the public
API) imports the package root, so ``fastrpc/__init__.py`` can re-export
anything without import cycles.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import fastrpc

#: the package's sources: the checkout CI names (an installed package has
#: no .pyx/.pxd files to read), else the package imported
SOURCE = os.environ.get("FASTRPC_SOURCE")
PACKAGE_DIR = os.path.join(SOURCE, "fastrpc") if SOURCE else os.path.dirname(os.path.abspath(fastrpc.__file__))

#: layer of each top-level part of the package: lower numbers are lower layers
LAYERS: Dict[str, int] = {
    "errors": 0,  # defined once, in Python; the compiled modules raise these
    "wire": 1,  # constants, codec, framing (and their twins)
    "core": 2,  # connection cores (and twins), the sans-IO session, call context
    "_impl": 2,  # the one compiled-or-pure switch: imports wire and core
    "transport": 3,  # addresses, loops, asyncio glue, blocking sockets
    "middleware": 4,  # chains around calls, for both sides
    "balancing": 4,  # instances, load, pickers and balancers (pure: no I/O)
    "interop": 4,  # other protocols on the port (msgpack-rpc, JSON-RPC 1.0) as sans-IO codecs: the server imports them
    "server": 5,
    "client": 5,
    "discovery": 6,  # registries and what clients look up (above server and client)
    "__init__": 7,  # the public API
    "cli": 8,  # a user of the public API only
    "__main__": 8,
}
#: layers of equal rank that must not import each other
PEERS = {("server", "client"), ("client", "server")}


def _part(module: str) -> Optional[str]:
    # "fastrpc.wire._codec" -> "wire"; "fastrpc" -> "__init__"
    names = module.split(".")
    if names[0] != "fastrpc":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _modules() -> Iterator[Tuple[str, str]]:
    """(dotted module name, path) of every module of the package."""
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
        for f in files:
            if not f.endswith((".py", ".pyx", ".pxd")):
                continue
            rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE_DIR))
            mod = os.path.splitext(rel)[0].replace(os.sep, ".")
            if mod.endswith(".__init__"):
                mod = mod[: -len(".__init__")]
            yield mod, os.path.join(root, f)


def _resolve(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([name] if name else []))


_CY_IMPORT = re.compile(r"^\s*(?:from\s+(\.*)([\w.]*)\s+c?import\s+([\w, ()]+)|c?import\s+([\w.]+))", re.M)


def _imports(module: str, path: str) -> List[str]:
    """Every fastrpc module ``module`` imports (``from X import y`` counts
    as both X and X.y: y may be a submodule)."""
    is_package = os.path.basename(path).startswith("__init__.")
    found: List[str] = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".py"):
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.Import):
                found += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node.level, node.module)
                found.append(target)
                found += [f"{target}.{a.name}" for a in node.names]
    else:  # Cython: the same statements, plus cimport
        for dots, name, what, plain in _CY_IMPORT.findall(text):
            if plain:
                found.append(plain)
                continue
            target = _resolve(module, is_package, len(dots), name or None)
            found.append(target)
            found += [f"{target}.{w.strip()}" for w in what.strip("()").split(",") if w.strip()]
    return [m for m in found if m == "fastrpc" or m.startswith("fastrpc.")]


def test_every_part_has_a_layer():
    parts = {_part(m) for m, _ in _modules()}
    assert parts <= set(LAYERS), f"add these to LAYERS: {sorted(parts - set(LAYERS))}"


def test_the_cython_sources_are_read_when_present():
    cython = [p for _, p in _modules() if p.endswith((".pyx", ".pxd"))]
    if SOURCE or not fastrpc.EXTENSIONS_ACTIVE:
        # A checkout (CI names it) or a source tree on sys.path: all six.
        assert len(cython) >= 6, cython


def test_no_layer_imports_a_higher_one():
    bad = []
    for module, path in _modules():
        mine = _part(module)
        for target in _imports(module, path):
            theirs = _part(target)
            if theirs is None or theirs == mine:
                continue
            if theirs not in LAYERS:
                continue  # "from fastrpc.wire import x": x is checked as fastrpc.wire.x
            if LAYERS[theirs] > LAYERS[mine] or (mine, theirs) in PEERS:
                bad.append(f"{module} ({mine}, layer {LAYERS[mine]}) imports {target} ({theirs}, layer {LAYERS[theirs]})")
    assert not bad, "\n".join(bad)


def test_checker_sees_a_violation(tmp_path):
    """The scan above finds upward imports in both Python and Cython syntax."""
    py = tmp_path / "mod.py"
    py.write_text("from ..client import Client\nimport fastrpc.server\n")
    assert _imports("fastrpc.wire.mod", str(py)) == ["fastrpc.client", "fastrpc.client.Client", "fastrpc.server"]
    pyx = tmp_path / "mod.pyx"
    pyx.write_text("from fastrpc.core._cores cimport ServerCore\nfrom ..transport import aio\n")
    found = _imports("fastrpc.wire.mod", str(pyx))
    assert "fastrpc.core._cores" in found and "fastrpc.transport.aio" in found

