"""``duo serve``'s parts without a server: an episode's accounting, the micro-batcher and the
episode log."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from duo_cli.serve.batcher import MicroBatcher
from duo_cli.serve.episodes import APPLICATION, EXPERT, NOVICE, Episode
from duo_cli.serve.store import read_episodes, summarize_log


def test_episode_accounting_by_hand():
    ep = Episode("e", True, False)
    # alpha*BP = 0.04, beta*BP = 0.05: novice, expert (switch), expert, novice (switch), app
    costs = []
    for actor, rewards in ((NOVICE, [1.0]), (EXPERT, []), (EXPERT, [2.0, 0.5]), (NOVICE, [])):
        costs.append(ep.record_step(actor, 1, 1, 0.04, 0.05))
        for r in rewards:  # rewards accumulate onto the latest step until the next one
            ep.add_reward(r)
    costs.append(ep.record_step(APPLICATION, 2, None, 0.04, 0.05))
    assert costs == pytest.approx([0.0, 0.09, 0.04, 0.05, 0.0])
    s = ep.summary()
    assert s["length"] == 5 and s["expert_steps"] == 2 and s["switches"] == 2
    assert s["cost"] == pytest.approx(0.18)
    assert s["base_return"] == pytest.approx(3.5)
    assert s["return"] == pytest.approx(3.5 - 0.18)
    assert ep.rewards == [1.0, 0.0, 2.5, 0.0, 0.0]


def test_batcher_batches_concurrent_items_and_never_delays_a_lone_one():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        time.sleep(0.02)
        return [x * 2 for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=8, max_wait_s=0.5, expected=lambda: 0,
                         executor=ThreadPoolExecutor(1))
        b.start()
        t = time.perf_counter()
        assert await b.submit(1) == 2
        lone = time.perf_counter() - t
        many = await asyncio.gather(*(b.submit(i) for i in range(20)))
        bad = await asyncio.gather(b.submit(3), b.submit("bad"), return_exceptions=True)
        await b.stop()
        return lone, many, bad, b

    lone, many, bad, b = asyncio.run(main())
    assert lone < 0.3  # expected() == 0: no wait window for a lone request
    assert many == [2 * i for i in range(20)]
    assert max(len(c) for c in calls) == 8 and b.max_seen == 8
    assert bad[0] == 6 and isinstance(bad[1], ValueError)  # the bad item fails alone


def test_batcher_waits_boundedly_for_expected_items():
    calls, others = [], {"n": 1}  # like EpisodeTable.ready_count: episodes that may still act

    async def main():
        b = MicroBatcher(lambda items: calls.append(list(items)) or list(items), max_batch=8,
                         max_wait_s=0.3, expected=lambda: others["n"], executor=None)
        b.start()

        async def late():
            await asyncio.sleep(0.05)
            others["n"] = 0
            return await b.submit("late")

        t = time.perf_counter()
        got = await asyncio.gather(b.submit("early"), late())
        waited = time.perf_counter() - t
        others["n"] = 1
        t = time.perf_counter()
        await b.submit("alone")  # another episode may act, but does not: the wait is bounded
        bounded = time.perf_counter() - t
        await b.stop()
        return got, waited, bounded

    got, waited, bounded = asyncio.run(main())
    assert got == ["early", "late"] and calls[0] == ["early", "late"]  # one call for both
    assert waited < 0.3 and 0.25 < bounded < 1.0


def test_episode_log_survives_a_torn_last_line(tmp_path):
    from duo_cli.serve.store import EpisodeLog

    log = EpisodeLog(tmp_path / "episodes.jsonl")
    for i in range(2):
        log.append({"episode_id": str(i), "status": "ended", "return": 1.0, "base_return": 1.0,
                    "length": 3, "expert_steps": 1, "switches": 0})
    log.close()
    with open(tmp_path / "episodes.jsonl", "a") as fh:
        fh.write('{"episode_id": "2", "sta')  # a crash mid-write
    recs = read_episodes(tmp_path)
    assert [r["episode_id"] for r in recs] == ["0", "1"]
    assert summarize_log(recs)["ended"]["expert_frac"] == pytest.approx(1 / 3)


# -- the protocol -----------------------------------------------------------------------------
