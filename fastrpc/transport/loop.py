"""Event loop selection: uvloop when it is installed, asyncio otherwise."""

from __future__ import annotations

import asyncio
from typing import Callable, Optional


def loop_factory(use_uvloop: Optional[bool] = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a callable creating a new event loop.

    ``use_uvloop=None`` picks uvloop when importable; ``True`` requires it;
    ``False`` uses the default asyncio loop.
    """
    if use_uvloop is not False:
        try:
            import uvloop
        except ImportError:
            if use_uvloop:
                raise
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_event_loop(use_uvloop: Optional[bool] = None) -> asyncio.AbstractEventLoop:
    """A new event loop (uvloop when available unless told otherwise)."""
    return loop_factory(use_uvloop)()
