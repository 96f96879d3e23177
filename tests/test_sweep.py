"""The one "pause during a sweep" registry (livetrader.sweep): every member paused and resumed together, one limit."""

from __future__ import annotations

import asyncio

from livetrader.live.metronome import Metronome
from livetrader.sweep import PAUSE_LIMIT_SECONDS, SweepPauses


class Recorder:
    """A member that records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def test_the_metronome_pauses_every_member_for_a_sweep_and_resumes_them_after_it() -> None:
    async def main() -> None:
        a, b = Recorder(), Recorder()
        metronome = Metronome([a])
        metronome.pauses.add(b)
        assert metronome.pauses.limit == PAUSE_LIMIT_SECONDS == 10.0
        waiting = metronome.wait(60_000, float("inf"))
        metronome.fire(60_000)
        assert await waiting == 60_000
        assert a.calls == b.calls == ["pause"] and metronome.pauses.paused
        metronome.ticked(60_000)
        assert a.calls == b.calls == ["pause", "resume"] and not metronome.pauses.paused
        metronome.pauses.remove(b)
        assert b not in metronome.pauses and len(metronome.pauses) == 1

    asyncio.run(main())


def test_the_limit_counts_from_the_first_pause_and_a_later_sweep_pauses_again() -> None:
    async def main() -> None:
        member = Recorder()
        pauses = SweepPauses([member], limit=0.1)
        pauses.pause()
        await asyncio.sleep(0.06)
        pauses.pause()  # a second boundary while the first sweep hangs: no new limit
        assert member.calls == ["pause"]
        await asyncio.sleep(0.06)
        assert member.calls == ["pause", "resume"] and not pauses.paused  # 0.12 s after the first pause
        pauses.pause()  # the next boundary holds them again, for at most the limit
        assert member.calls == ["pause", "resume", "pause"]
        pauses.resume()
        await asyncio.sleep(0.15)
        assert member.calls == ["pause", "resume", "pause", "resume"]  # the timer went with the resume

    asyncio.run(main())
