"""`gitsync.wakeable.WakeableThread`: a poke ends the wait, a stop ends the thread."""

from __future__ import annotations

import threading

from gitsync.wakeable import WakeableThread

DEADLINE = 10.0  # seconds a test waits before it fails; never reached when all is well


class Rounds(WakeableThread):
    def __init__(self) -> None:
        super().__init__(name="test-rounds")
        self.rounds = 0
        self.ran = threading.Event()

    def _run(self) -> None:
        while self.sleep(3600):  # only a poke or a stop ends this wait
            self.rounds += 1
            self.ran.set()


def test_a_poke_runs_a_round_long_before_the_wait_ends_and_stop_ends_the_thread() -> None:
    worker = Rounds()
    worker.start()
    try:
        worker.poke()
        assert worker.ran.wait(DEADLINE), "a poke did not end the hour's wait"
        assert worker.rounds == 1
    finally:
        worker.stop(timeout=DEADLINE)
    assert worker.stopping
    assert worker._thread is not None
    assert not worker._thread.is_alive()
    assert worker.rounds == 1  # a stop is not a round


def test_sleep_says_whether_to_go_on() -> None:
    worker = Rounds()
    assert worker.sleep(0)
    worker.stop()  # never started: nothing to join
    assert not worker.sleep(0)
