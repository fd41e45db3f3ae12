"""Answering on the event loop when everything a request reads is in memory; in a worker thread otherwise.

A hot request (a dot plot of cached features, a prefix search) needs no I/O once its version's
pointer, catalog and rows are cached, and then costs less than the hop to a worker thread and back:
under load every wake-up of another thread waits for a core. `answer(fn)` runs the blocking
function `fn` on the loop with `MEMORY_ONLY` set: every place that would read DynamoDB or HBase
calls `require_io`, which then raises `WouldBlock`; `fn` is then run again, from the start, in a
worker thread (it only reads, so running it twice changes nothing).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")

MEMORY_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("wideviews_memory_only", default=False)


class WouldBlock(Exception):
    """A read from DynamoDB or HBase was needed while answering from memory only."""


def require_io(what: str) -> None:
    """Call before any blocking read: raises `WouldBlock` while answering from memory only."""
    if MEMORY_ONLY.get():
        raise WouldBlock(what)


async def answer(fn: Callable[[], T]) -> T:
    """`fn()` on the event loop if it reads nothing but memory, else in a worker thread."""
    token = MEMORY_ONLY.set(True)
    try:
        return fn()
    except WouldBlock:
        pass
    finally:
        MEMORY_ONLY.reset(token)
    return await run_in_threadpool(fn)
