"""The continuous batcher on its own: which items share a model call, and who gets which result.

The model call is a fake whose calls the test lets finish one by one, so batch compositions are
decided by the order of events, not by time: no test here depends on how fast the machine is."""

import asyncio

import pytest

from speech_service.batching import ContinuousBatcher

BOUND_S = 30  # a safety bound for a test's whole scenario, never reached when the batcher is right


class GatedModel:
    """Records each call's items and returns only when the test finishes that call; a call holding
    "bad" raises."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self._gates: list[asyncio.Event] = []

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        gate = asyncio.Event()
        self._gates.append(gate)
        await gate.wait()
        if "bad" in items:
            raise ValueError("this batch failed")
        return [f"{item}!" for item in items]

    def finish(self, call: int) -> None:
        self._gates[call].set()


async def settle() -> None:
    """Let every task that can run do so (no real time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), BOUND_S))


def submit(batcher: ContinuousBatcher, *items: str) -> list[asyncio.Task]:
    return [asyncio.create_task(batcher.submit(item)) for item in items]


def test_an_idle_model_starts_on_the_first_item_at_once():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=8)  # wait_s defaults to 0
        [a] = submit(batcher, "a")
        await settle()
        assert model.calls == [["a"]]  # no waiting for company
        model.finish(0)
        assert await a == "a!"
        [b] = submit(batcher, "b")  # idle again: the next item starts at once too
        await settle()
        assert model.calls == [["a"], ["b"]]
        model.finish(1)
        assert await b == "b!"

    run(scenario)


def test_items_arriving_during_a_call_go_into_the_next_call_together():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=8)
        first = submit(batcher, "a")
        await settle()
        later = submit(batcher, "b", "c", "d")
        await settle()
        assert model.calls == [["a"]]  # one call at a time: the others queue
        model.finish(0)
        await settle()
        assert model.calls == [["a"], ["b", "c", "d"]]
        model.finish(1)
        assert await asyncio.gather(*first, *later) == ["a!", "b!", "c!", "d!"]

    run(scenario)


def test_a_call_takes_at_most_max_batch_size_items():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=2)
        tasks = submit(batcher, "a")
        await settle()
        tasks += submit(batcher, "b", "c", "d", "e", "f")
        for call in range(4):
            await settle()
            model.finish(call)
        assert await asyncio.gather(*tasks) == ["a!", "b!", "c!", "d!", "e!", "f!"]
        assert model.calls == [["a"], ["b", "c"], ["d", "e"], ["f"]]

    run(scenario)


def test_an_idle_model_waits_for_company_until_a_batch_is_full_but_a_busy_one_never_waits():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=3, wait_s=BOUND_S * 10)
        tasks = submit(batcher, "a", "b")
        await settle()
        assert model.calls == []  # idle: waiting for company
        tasks += submit(batcher, "c", "d")
        await settle()
        assert model.calls == [["a", "b", "c"]]  # full: no more waiting
        model.finish(0)
        await settle()
        assert model.calls == [["a", "b", "c"], ["d"]]  # queued during a call: taken at once
        model.finish(1)
        assert await asyncio.gather(*tasks) == ["a!", "b!", "c!", "d!"]

    run(scenario)


def test_the_wait_for_company_ends():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=8, wait_s=0.01)
        [a] = submit(batcher, "a")
        while not model.calls:  # bounded by BOUND_S
            await asyncio.sleep(0.01)
        model.finish(0)
        assert await a == "a!" and model.calls == [["a"]]

    run(scenario)


def test_cancelled_callers_are_dropped_and_never_hold_up_others():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=2)
        a, b = submit(batcher, "a", "b")
        await settle()
        gone1, gone2, c, d = submit(batcher, "gone1", "gone2", "c", "d")
        await settle()
        gone1.cancel()
        gone2.cancel()
        b.cancel()  # hangs up while its call runs
        await settle()
        model.finish(0)
        await settle()
        assert model.calls == [["a", "b"], ["c", "d"]]  # the cancelled took no place in a call
        model.finish(1)
        assert await asyncio.gather(a, c, d) == ["a!", "c!", "d!"]
        for task in (gone1, gone2, b):
            with pytest.raises(asyncio.CancelledError):
                await task

    run(scenario)


def test_callers_cancelled_while_the_model_waits_for_company_do_not_count_as_company():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=2, wait_s=BOUND_S * 10)
        [gone] = submit(batcher, "gone")
        await settle()
        gone.cancel()
        [a] = submit(batcher, "a")
        await settle()
        assert model.calls == []  # one live item: still waiting
        [b] = submit(batcher, "b")
        await settle()
        assert model.calls == [["a", "b"]]
        model.finish(0)
        assert await asyncio.gather(a, b) == ["a!", "b!"]

    run(scenario)


def test_an_exception_reaches_exactly_the_callers_of_its_call():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=8)
        [a] = submit(batcher, "a")
        await settle()
        bad, b = submit(batcher, "bad", "b")
        await settle()
        model.finish(0)
        await settle()
        [c] = submit(batcher, "c")  # arrives while the failing call runs
        await settle()
        model.finish(1)
        await settle()
        model.finish(2)
        assert model.calls == [["a"], ["bad", "b"], ["c"]]
        assert await a == "a!" and await c == "c!"
        for task in (bad, b):
            with pytest.raises(ValueError, match="this batch failed"):
                await task

    run(scenario)


def test_a_call_returning_the_wrong_number_of_results_fails_its_callers():
    async def scenario():
        async def short(items):
            return items[:-1]

        batcher = ContinuousBatcher(short)
        tasks = submit(batcher, "a", "b")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results), results

    run(scenario)


def test_knob_changes_apply_to_the_next_call():
    async def scenario():
        model = GatedModel()
        batcher = ContinuousBatcher(model, max_batch_size=1)
        tasks = submit(batcher, "a")
        await settle()
        tasks += submit(batcher, "b", "c", "d", "e")
        batcher.max_batch_size = 3
        batcher.wait_s = BOUND_S * 10  # only an idle model waits: the queued items go at once
        model.finish(0)
        await settle()
        model.finish(1)
        await settle()
        assert model.calls == [["a"], ["b", "c", "d"], ["e"]]
        model.finish(2)
        assert await asyncio.gather(*tasks) == ["a!", "b!", "c!", "d!", "e!"]
        [f] = submit(batcher, "f")  # idle now: the new wait applies
        await settle()
        assert len(model.calls) == 3
        batcher.max_batch_size = 1  # ...until the batch is full, which it now is with one item
        g = submit(batcher, "g")
        await settle()
        assert model.calls[3] == ["f"]
        model.finish(3)
        await settle()
        model.finish(4)
        assert await f == "f!" and await g[0] == "g!"

    run(scenario)
