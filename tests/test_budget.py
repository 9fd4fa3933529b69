"""The byte budget's arithmetic: the prefetch queue waits for room, a decode never crosses it."""

from __future__ import annotations

import asyncio

from datago.budget import ByteBudget
from datago.stats import Stats


def test_the_queue_leaves_room_for_a_sample_in_hand_and_one_being_built() -> None:
    async def scenario() -> tuple[list[int], bool, list[int], int]:
        stats = Stats()
        budget = ByteBudget(100, samples=1, prefetch=1, stats=stats)
        admitted = []
        for _ in range(2):  # 10 encoded each, 40 once built: 2 x 40 + 20 fill the 100
            await asyncio.wait_for(budget.admit(10, 40), 1)
            admitted.append(budget.queued)
        third = asyncio.create_task(budget.admit(10, 40))
        await asyncio.sleep(0.05)
        blocked = not third.done()
        held = []
        for _ in range(2):
            assert budget.fits(40 - 10)  # nothing but the one in hand: the head may go
            budget.reserve(10, 40)
            held.append(budget.held)
            budget.settle(-5)  # built: 35 bytes, not 40
            budget.taken(35)  # in hand until the consumer takes the next
        await asyncio.wait_for(third, 1)
        return admitted, blocked, held, stats.peak_bytes_held

    admitted, blocked, held, peak = asyncio.run(scenario())
    assert admitted == [10, 20]
    assert blocked  # 20 + 10 + two samples of 40 would cross 100
    assert held == [10 + 40, 35 + 40]  # one queued and one building; in hand and one building
    assert peak <= 100


def test_a_sample_bigger_than_the_budget_passes_alone() -> None:
    async def scenario() -> list[bool]:
        budget = ByteBudget(50, samples=1, prefetch=1, stats=Stats())
        await asyncio.wait_for(budget.admit(10, 80), 1)  # nothing held: it enters
        alone = budget.fits(80 - 10)
        budget.reserve(10, 80)
        second = budget.fits(80 - 10)  # one is building: the next waits
        budget.settle(0)
        budget.taken(80)
        third = budget.fits(80 - 10)  # only the one in hand: the next may go
        return [alone, second, third]

    assert asyncio.run(scenario()) == [True, False, True]


def test_the_default_limit_follows_the_largest_sample() -> None:
    stats = Stats()
    budget = ByteBudget(None, samples=5, prefetch=4, stats=stats)
    assert budget.limit == float("inf")  # nothing known yet
    budget.learn(40_000_000)
    budget.largest_encoded = 3_000_000
    assert budget.limit == 5 * 40_000_000 + 4 * 3_000_000
