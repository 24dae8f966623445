"""Stopping background tasks: bounded even when a task fights its cancellation, and never
swallowing the stopper's own cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from chain.core.aio import settle, stop_tasks


async def test_stop_tasks_ends_a_task_that_swallows_its_first_cancel() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 2:
                    raise

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    await stop_tasks(task, timeout=5)
    assert task.cancelled() and swallowed == 3
    assert time.monotonic() - started < 2.5


async def test_stop_tasks_gives_up_on_a_task_that_never_stops() -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(deaf())
    await asyncio.sleep(0)
    started = time.monotonic()
    await stop_tasks(task, timeout=0.3)
    assert time.monotonic() - started < 1.5 and not task.done()
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    assert task.done()


async def test_stop_tasks_does_not_raise_the_tasks_errors() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    await stop_tasks(task, None)
    assert isinstance(task.exception(), RuntimeError)


async def test_settle_waits_without_cancelling_and_lets_the_callers_cancel_through() -> None:
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    task = asyncio.ensure_future(work())
    waiter = asyncio.ensure_future(settle(task))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not task.done()  # the caller's cancel did not reach the task
    gate.set()
    await settle(task, timeout=2)
    assert task.result() == "done"
