"""Build script: declares the optional Cython extensions.

* ``FASTRPC_NO_EXTENSIONS=1`` at build time: pure-Python install, no compile.
* A compiler (or Cython) failure is not fatal: the install goes on with the
  pure-Python twins and says so loudly.  CI builds the extensions and checks
  that they are the ones loaded, so a silent fallback cannot pass there.
* ``FASTRPC_DEBUG=1``: Cython annotation HTML (``cython -a``), line tracing
  and the ``FASTRPC_DEBUG`` C macro.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "False")


NO_EXTENSIONS = _flag("FASTRPC_NO_EXTENSIONS") or sys.implementation.name != "cpython"
DEBUG = _flag("FASTRPC_DEBUG")


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python instead of failing."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        bar = "*" * 72
        sys.stderr.write(
            f"\n{bar}\nWARNING: fastrpc's Cython extensions could not be built ({exc}).\n"
            "fastrpc will run on its pure-Python fallback, several times slower.\n"
            f"{bar}\n\n"
        )


def extensions():
    if NO_EXTENSIONS:
        print("fastrpc: FASTRPC_NO_EXTENSIONS set: pure-Python build")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        OptionalBuildExt._warn("Cython is not installed")
        return []
    macros = [("FASTRPC_DEBUG", "1" if DEBUG else "0")]
    directives = {"language_level": "3", "embedsignature": True}
    if DEBUG:
        directives["linetrace"] = True
        macros.append(("CYTHON_TRACE", "1"))
    exts = [
        Extension(name, [path], define_macros=list(macros))
        for name, path in (
            ("fastrpc.wire._codec", "fastrpc/wire/_codec.pyx"),
            ("fastrpc.wire._framing", "fastrpc/wire/_framing.pyx"),
            ("fastrpc.core._cores", "fastrpc/core/_cores.pyx"),
        )
    ]
    try:
        return cythonize(exts, compiler_directives=directives, annotate=DEBUG)
    except Exception as exc:  # noqa: BLE001 - Cython compile error
        OptionalBuildExt._warn(exc)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
