"""Stopping a child task from a task that may itself be cancelled meanwhile."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel `task` and wait until it has ended, whatever it ended with.

    `with suppress(CancelledError): await task` also swallows a cancel of the *waiting* task that
    lands while the child stops: the caller would go on as if never cancelled (a stream job went on
    streaming after its stop). Here the child's cancellation is absorbed and the caller's own is
    raised again once the child has ended. The child is cancelled until it ends, since on Python
    3.11 a cancel can be swallowed inside it too (gh-86296).
    """
    current = asyncio.current_task()
    cancelled = False
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=1.0)
        except asyncio.CancelledError:
            cancelled = True  # ours: raised once the child has ended
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()  # retrieved: the child's own failure is not the caller's
    if cancelled or (current is not None and current.cancelling()):
        raise asyncio.CancelledError
