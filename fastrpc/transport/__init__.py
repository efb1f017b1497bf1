"""Transports: addresses, event loops, and the asyncio glue that moves a
connection's bytes (write coalescing, flow control).

Builds on :mod:`fastrpc.core` and :mod:`fastrpc.wire`.
"""
