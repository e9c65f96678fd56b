"""The scan's rate limits on an injectable clock, the open-files limit, and a fake clock for tests.

Every wait of the scan goes through the event loop's clock (``loop.time()``, ``asyncio.sleep``,
``asyncio.timeout``) or through a :class:`Clock` given to a limiter, so a test can run a whole scan on
:class:`FakeClock`'s virtual time: a server that never answers costs the test no real second.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """Time as the limits see it."""

    def time(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class LoopClock:
    """The running event loop's clock (virtual under :class:`FakeClock`'s loop)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


LOOP_CLOCK = LoopClock()


class RateLimiter:
    """A token bucket as a schedule: each caller reserves the next free slot and sleeps until it.

    Slots are ``1/rate`` apart; up to ``burst`` slots may be taken at once after an idle spell. Reserving
    instead of polling keeps waiters in arrival order and wakes each exactly once.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Clock | None = None) -> None:
        self.interval = 1.0 / rate
        self.span = max(burst - 1.0, 0.0) * self.interval
        self.next = 0.0
        self.clock = clock or LOOP_CLOCK

    async def wait(self) -> None:
        """Wait for this caller's slot."""
        now = self.clock.time()
        slot = max(self.next, now - self.span)
        self.next = slot + self.interval
        if slot > now:
            await self.clock.sleep(slot - now)


class Gate:
    """What a request waits for: the scan's bucket, then its address's bucket."""

    def __init__(self, *limiters: RateLimiter | None) -> None:
        self.limiters = [lim for lim in limiters if lim is not None]

    async def wait(self) -> None:
        for limiter in self.limiters:
            await limiter.wait()


class Gates:
    """The rate limits of one scan: ``rate`` requests per second over the scan, ``per_host`` to one
    address (a bucket shared by every target on that address, dropped when the last one ends); 0 = none.
    """

    def __init__(self, rate: float, per_host: float, clock: Clock | None = None) -> None:
        self.clock = clock or LOOP_CLOCK
        self.per_host = per_host
        self.overall = RateLimiter(rate, burst=max(1.0, rate / 10), clock=self.clock) if rate else None
        self._hosts: dict[str, tuple[RateLimiter, int]] = {}

    def acquire(self, address: str) -> Gate:
        """The gate for a target on ``address``; :meth:`release` it when the target is done."""
        entry = self._hosts.get(address)
        if self.per_host and entry is None:
            entry = (RateLimiter(self.per_host, burst=max(1.0, self.per_host / 4), clock=self.clock), 0)
        if entry is not None:
            self._hosts[address] = (entry[0], entry[1] + 1)
        return Gate(self.overall, entry[0] if entry else None)

    def release(self, address: str) -> None:
        entry = self._hosts.get(address)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._hosts[address]
        else:
            self._hosts[address] = (entry[0], entry[1] - 1)

    def __len__(self) -> int:
        """Addresses with a bucket now."""
        return len(self._hosts)


def retry_delay(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): 0.2 s doubling, at most 2 s."""
    return min(0.2 * 2 ** (attempt - 1), 2.0)


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the soft limit now in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        want = min(want, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < want:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    except ImportError:  # not on POSIX
        return 1 << 12


# -- virtual time for tests ----------------------------------------------------------------------


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, when nothing is ready, moves the fake clock to the next timer instead of
    sleeping (after ``threshold`` real seconds, so a helper thread can still finish its work first)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        events = super().select(min(timeout, self.clock.threshold))
        if not events:
            self.clock.now += timeout
        return events


class FakeClock:
    """Virtual time, as trio's ``MockClock`` with autojump: :meth:`run` runs a coroutine on an event loop
    whose clock is ``now`` and jumps to the next timer whenever every task waits. ``asyncio.sleep``,
    ``asyncio.timeout`` and the limiters then cost no real time; ``sleeps`` records the clock's sleeps.
    """

    def __init__(self, start: float = 1000.0, threshold: float = 0.001) -> None:
        self.now = start
        self.threshold = threshold
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        clock = self

        class _FakeTimeLoop(asyncio.SelectorEventLoop):
            def time(self) -> float:
                return clock.now

        return _FakeTimeLoop(_JumpingSelector(self))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to the end on virtual time."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(coro)
