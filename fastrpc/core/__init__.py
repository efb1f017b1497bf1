"""The connection cores: the per-call fast path of both ends of a connection,
compiled (``_cores.pyx``) with a pure-Python twin (``_cores_py.py``).

Builds on :mod:`fastrpc.wire`; knows nothing of sockets or clients.
"""
