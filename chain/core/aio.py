"""Ending background tasks without hanging and without losing a cancellation, and running until
a signal says stop.

asyncio stops a task only if the task lets its ``CancelledError`` through. One that swallows it
(a broad ``except``, or a library that turns cancellation into its own error) keeps running, and
the usual ``task.cancel(); await task`` then waits forever: a node that cannot shut down. The
converse mistake, ``suppress(BaseException)`` around an await, swallows the *caller's* own
cancellation and leaves it running when it was told to stop. These two helpers avoid both: they
bound every wait, never raise the awaited task's outcome, and let the caller's cancellation
through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
_RECANCEL_EVERY = 0.5


async def stop_tasks(*tasks: asyncio.Future[Any] | None, timeout: float = STOP_TIMEOUT) -> None:
    """Cancel ``tasks`` and wait until each has ended, however it ends.

    A task that ignores a cancel is cancelled again every half second; one still running after
    ``timeout`` seconds is logged and left behind rather than blocking shutdown for ever.
    """
    live = [t for t in tasks if t is not None]
    pending = {t for t in live if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("%d task(s) ignored cancellation and were left running: %s",
                      len(pending), pending)
            break
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_EVERY, remaining))
    for task in live:
        observe(task)


async def settle(task: asyncio.Future[Any], timeout: float | None = None) -> None:
    """Wait (at most ``timeout`` seconds) for ``task`` to end without cancelling it.

    Its result or error is not raised here: whoever owns the task reports it.
    """
    await asyncio.wait({task}, timeout=timeout)
    observe(task)


def observe(task: asyncio.Future[Any]) -> None:
    """Mark a finished task's exception as retrieved, so asyncio does not log it again."""
    if task.done() and not task.cancelled():
        task.exception()


async def until_interrupted(ready: Callable[[], None] | None = None) -> None:
    """Return on SIGINT or SIGTERM (after calling ``ready`` once the handlers are in place), so
    that a long-running command stops through its ``finally`` blocks, not mid-write."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # no signal handlers off the main thread or on platforms without them: Ctrl-C then
        # arrives as KeyboardInterrupt, which ends the run just the same
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    await stop.wait()
