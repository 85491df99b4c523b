"""A stream job's RAW pages go out in order, off the job's path, and never past a failed one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from cryptoflow_extractor.streaming import PageWriter


class PublishError(Exception):
    pass


def page(
    log: list[int], number: int, started: asyncio.Event | None = None, gate: asyncio.Event | None = None
) -> Callable[[], Awaitable[None]]:
    """Page `number` (refused when negative); it starts by setting `started`, then waits for `gate`."""

    async def send() -> None:
        if started is not None:
            started.set()
        if gate is not None:
            await gate.wait()
        if number < 0:
            raise PublishError(f"page {-number} refused")
        log.append(number)

    return send


async def test_pages_are_published_in_order_while_the_writer_goes_on() -> None:
    published: list[int] = []
    started, gate = asyncio.Event(), asyncio.Event()
    writer = PageWriter()
    await writer.write(page(published, 1, started, gate))
    await started.wait()
    # Page 1 waits for its ack: the job is not held, and writes the next pages meanwhile.
    for number in (2, 3, 4):
        await writer.write(page(published, number))
    assert published == []
    gate.set()
    await writer.close()
    assert published == [1, 2, 3, 4]


async def test_no_page_is_published_after_a_failed_one_and_the_failure_is_raised() -> None:
    published: list[int] = []
    started, gate = asyncio.Event(), asyncio.Event()
    writer = PageWriter()
    await writer.write(page(published, 1))
    await writer.write(page(published, -2, started, gate))
    await started.wait()
    await writer.write(page(published, 3))  # queued behind the page that is about to fail
    gate.set()
    with pytest.raises(PublishError, match="page 2 refused"):
        await writer.close()
    # Page 3's checkpoint would have passed page 2's trades, which are not in RAW.
    assert published == [1]
    with pytest.raises(PublishError):
        await writer.write(page(published, 4))
    assert published == [1]


async def test_a_full_queue_makes_the_writer_wait_for_raw() -> None:
    published: list[int] = []
    started, gate = asyncio.Event(), asyncio.Event()
    writer = PageWriter(max_waiting=2)
    await writer.write(page(published, 1, started, gate))
    await started.wait()
    await writer.write(page(published, 2))
    await writer.write(page(published, 3))
    blocked = asyncio.create_task(writer.write(page(published, 4)))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # two pages wait already: memory is bounded by RAW's pace
    gate.set()
    await blocked
    await writer.close()
    assert published == [1, 2, 3, 4]
