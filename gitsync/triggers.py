"""The trigger queue that feeds the one reconcile loop, and the jittered poll interval.

Why a coalescing set and not a FIFO: a pass always reconciles to the newest
revision, so ten webhooks that arrive while a pass runs need exactly one more
pass, not ten. The queue therefore holds at most one pending *pass*; each
`put` only adds its reason to the set of reasons for that pass. A flood of
webhooks costs a lock acquisition each and never queues work.

Why the reasons are kept at all: the loop logs them ("webhook:github",
"poll", "watch") so an operator can see what started a pass. Their number is
capped, because a caller that puts ever-new strings must not grow memory.

Why triggers are also counted by source: `gitsync_triggers_total{source}` is
how an operator (and a test of the running process) sees what asked for
passes, including triggers that coalesced into a pass already due. The
count moves inside `put`, before the caller answers anyone (a webhook's 202),
so a client that got its answer can read the metric at once. The source is
the reason's part before ":" when it is one of `TRIGGER_SOURCES`, else
"other", so the label's values stay few whatever callers put.

Why jitter: many controllers that start together (a rollout, a node reboot)
would otherwise poll the git server in lockstep.
"""

from __future__ import annotations

import random
import threading

DEFAULT_MAX_REASONS = 32

# Label values of gitsync_triggers_total{source}: the daemon's first pass, the poll timer
# (a `wait` that timed out), webhooks, the folder watch, winning the lease, anything else.
TRIGGER_SOURCES = ("start", "interval", "webhook", "watch", "leader", "refresh", "other")


def trigger_source(reason: str) -> str:
    """The bounded source of a reason: "webhook:github" is "webhook"; unknown ones are "other"."""
    source = reason.split(":", 1)[0]
    return source if source in TRIGGER_SOURCES else "other"


class TriggerQueue:
    """Thread-safe, deduplicating queue of reasons to run one more reconcile pass.

    `put` never waits for a pass: it only takes a short lock. `wait` returns
    every distinct reason that arrived since the previous `wait`, in arrival
    order, or `()` on timeout or once the queue is closed.
    """

    def __init__(self, *, max_reasons: int = DEFAULT_MAX_REASONS) -> None:
        if max_reasons < 1:
            raise ValueError(f"max_reasons must be at least 1, got {max_reasons}")
        self._max_reasons = max_reasons
        self._cond = threading.Condition(threading.Lock())
        # A dict is an insertion-ordered set: reasons come back in arrival order.
        self._pending: dict[str, None] = {}
        self._closed = False
        self._received = 0
        self._passes = 0
        self._by_source = dict.fromkeys(TRIGGER_SOURCES, 0)

    def put(self, reason: str) -> None:
        """Ask for one more pass. Ignored once the queue is closed (the daemon is stopping)."""
        with self._cond:
            if self._closed:
                return
            self._received += 1
            self._by_source[trigger_source(reason)] += 1
            if reason in self._pending or len(self._pending) < self._max_reasons:
                self._pending[reason] = None
            # Past the cap the pass is still due (the set is non-empty); only the text is dropped.
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> tuple[str, ...]:
        """Block until a trigger arrives, `timeout` seconds pass, or `close()` is called.

        Returns the coalesced reasons and clears them, so triggers that arrive
        while the caller runs its pass make up exactly one later result.
        Returns `()` on timeout (the caller's poll is due, counted as an
        "interval" trigger) and, without waiting, once the queue is closed:
        pending reasons are then dropped, because a stopping daemon must not
        start another pass.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be None or at least 0 seconds, got {timeout}")
        with self._cond:
            self._cond.wait_for(lambda: self._closed or bool(self._pending), timeout)
            if self._closed:
                return ()
            if not self._pending:
                self._by_source["interval"] += 1
                return ()
            reasons = tuple(self._pending)
            self._pending.clear()
            self._passes += 1
            return reasons

    def close(self) -> None:
        """Wake every waiter; from now on `wait` returns `()` at once and `put` is ignored."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def pending(self) -> bool:
        """True when a pass is due: some trigger arrived since the last `wait` result."""
        with self._cond:
            return bool(self._pending)

    @property
    def received(self) -> int:
        """Triggers accepted by `put` since the queue was made (for metrics)."""
        with self._cond:
            return self._received

    def counts_by_source(self) -> dict[str, int]:
        """Triggers so far by source, zeros included; unlike `received`, timed-out waits count."""
        with self._cond:
            return dict(self._by_source)

    @property
    def passes(self) -> int:
        """Non-empty results `wait` has handed out: the passes triggers asked for."""
        with self._cond:
            return self._passes

    @property
    def coalesced(self) -> int:
        """Triggers that did not cost a pass of their own: received minus handed out and pending."""
        with self._cond:
            return self._received - self._passes - (1 if self._pending else 0)


def jittered_interval(base_seconds: float, *, rng: random.Random, jitter: float = 0.1) -> float:
    """Return `base_seconds` scaled by a uniform factor in [1 − jitter, 1 + jitter].

    The random source is passed in so tests (and a benchmark) can seed it.
    """
    if base_seconds < 0:
        raise ValueError(f"poll interval must be at least 0 seconds, got {base_seconds}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be a fraction in [0, 1), got {jitter}")
    return base_seconds * (1.0 + rng.uniform(-jitter, jitter))
