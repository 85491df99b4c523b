"""A stream job that is cancelled stops, whenever the cancel lands.

On Python 3.11, `asyncio.wait_for` returns the inner result when the outer cancel lands as the
inner wait completes (CPython gh-86296), and `suppress(CancelledError): await child` swallows a
cancel of the waiting task itself: a stream job cancelled at such a moment went on streaming, and
whoever awaited it (a test's `run_for`, a shutdown) waited forever. Here the cancel is placed at
every point of an update's hand-over.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptoflow_extractor.streaming import PageWriter, Updates
from cryptoflow_runtime.tasks import cancel_and_wait


class FakeClient:
    def take_frames(self) -> list[object]:
        return []


@pytest.mark.parametrize("hops", range(8))
async def test_a_wait_for_the_next_update_cancelled_as_one_arrives_stays_cancelled(hops: int) -> None:
    source: asyncio.Queue[str] = asyncio.Queue()
    updates = Updates(FakeClient(), source.get)  # type: ignore[arg-type]
    waiter = asyncio.create_task(updates.next(10))
    await asyncio.sleep(0)
    source.put_nowait("update")
    for _ in range(hops):
        await asyncio.sleep(0)
    if not waiter.cancel():
        await updates.close()
        return  # it had its update before the cancel: nothing to stop
    try:
        with pytest.raises(asyncio.CancelledError):
            await waiter
    finally:
        await updates.close()


async def slow_to_stop() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0.2)  # cleaning up (ccxt unsubscribing, an ack in flight)
        raise


async def test_closing_updates_cancelled_while_the_watcher_stops_stays_cancelled() -> None:
    updates = Updates(FakeClient(), slow_to_stop)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    closing = asyncio.create_task(updates.close())
    await asyncio.sleep(0.05)
    assert closing.cancel()  # the watcher takes 0.2 s to stop: close is still waiting for it
    with pytest.raises(asyncio.CancelledError):
        await closing


@pytest.mark.parametrize("hops", range(8))
async def test_closing_a_page_writer_cancelled_at_any_point_stays_cancelled(hops: int) -> None:
    published: list[int] = []

    async def page() -> None:
        published.append(1)

    writer = PageWriter()
    await writer.write(page)
    closing = asyncio.create_task(writer.close())
    for _ in range(hops):
        await asyncio.sleep(0)
    if not closing.cancel():
        assert published == [1]
        return  # closed before the cancel: nothing to stop
    with pytest.raises(asyncio.CancelledError):
        await closing


async def test_cancel_and_wait_ends_the_child_and_keeps_the_callers_own_cancel() -> None:
    child = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    await cancel_and_wait(child)
    assert child.cancelled()

    async def parent() -> str:
        inner = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        await cancel_and_wait(inner)
        return "went on"

    task = asyncio.create_task(parent())
    await asyncio.sleep(0.05)  # the parent waits for its child to stop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
