"""The query's byte-bounded stats cache and its memory-only answering on the event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from services.query.memory_only import answer, require_io
from services.query.reads import ByteLru


def test_byte_lru_keeps_the_most_recently_used_within_its_bytes() -> None:
    cache: ByteLru[str, np.ndarray] = ByteLru(1000)
    vectors = {k: np.full(30, i, dtype=np.float64) for i, k in enumerate("abcde")}  # 240 bytes each
    cache.put_many([(k, v, v.nbytes) for k, v in list(vectors.items())[:4]])  # a b c d: 960 bytes
    assert set(cache.get_many(list("abcd"))) == set("abcd")
    cache.get_many(["a"])  # a is now the most recent: b goes first
    cache.put_many([("e", vectors["e"], 240)])
    found = cache.get_many(list("abcde"))
    assert set(found) == {"a", "c", "d", "e"}
    assert all(found[k] is vectors[k] for k in found)
    # Replacing a key does not count it twice.
    cache.put_many([("e", vectors["e"], 240)] * 3)
    assert set(cache.get_many(list("acde"))) == {"a", "c", "d", "e"}


def test_a_zero_byte_cache_keeps_nothing() -> None:
    cache: ByteLru[str, int] = ByteLru(0)
    cache.put_many([("a", 1, 8)])
    assert cache.get_many(["a"]) == {}


def test_answer_runs_on_the_loop_from_memory_and_in_a_thread_when_it_must_read() -> None:
    loop_thread: list[threading.Thread] = []
    ran_in: list[threading.Thread] = []
    cached: set[str] = {"hit"}

    def read(key: str) -> str:
        ran_in.append(threading.current_thread())
        if key not in cached:
            require_io(f"read {key}")
        return key.upper()

    async def main() -> tuple[str, str]:
        loop_thread.append(threading.current_thread())
        return await answer(lambda: read("hit")), await answer(lambda: read("miss"))

    assert asyncio.run(main()) == ("HIT", "MISS")
    # The hit ran once, on the loop; the miss was tried on the loop, then run again in a worker thread.
    assert ran_in[0] is loop_thread[0] and ran_in[1] is loop_thread[0]
    assert len(ran_in) == 3 and ran_in[2] is not loop_thread[0]
    # Outside `answer` nothing is refused.
    assert read("elsewhere") == "ELSEWHERE"


def test_errors_other_than_would_block_are_not_retried() -> None:
    calls = []

    def fail() -> None:
        calls.append(1)
        raise KeyError("bad")

    with pytest.raises(KeyError):
        asyncio.run(answer(fail))
    assert calls == [1]
