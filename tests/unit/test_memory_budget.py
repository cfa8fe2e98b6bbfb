"""The verifications' memory budget: reservations wait in order until they fit."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.memory_budget import MemoryBudget


async def test_reservations_wait_until_they_fit_in_arrival_order() -> None:
    budget = MemoryBudget(100)
    first = await budget.acquire(60)
    order: list[str] = []

    async def take(name: str, amount: int) -> None:
        await budget.acquire(amount)
        order.append(name)

    big = asyncio.create_task(take("big", 70))
    small = asyncio.create_task(take("small", 10))  # fits now, but waits behind "big"
    await asyncio.sleep(0.01)
    assert order == [] and budget.available == 40
    budget.release(first)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and budget.available == 20


async def test_a_reservation_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    assert await budget.acquire(1_000) == 100
    waiting = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    budget.release(100)
    assert await waiting == 1


async def test_a_cancelled_waiter_lets_those_behind_it_through() -> None:
    budget = MemoryBudget(100)
    held = await budget.acquire(50)
    blocked = asyncio.create_task(budget.acquire(80))
    behind = asyncio.create_task(budget.acquire(40))
    await asyncio.sleep(0.01)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert await asyncio.wait_for(behind, 1) == 40
    budget.release(held)
    budget.release(40)
    assert budget.available == 100
