"""index.rwlock.ReadWriteLock on real threads: shared reads, exclusive writes, writer preference."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from memesearch.index.rwlock import ReadWriteLock

TIMEOUT = 5.0  # a bound on joins and waits, never reached unless the lock is broken


class WatchedCondition(threading.Condition):
    """A Condition that tells, per thread name, when that thread has blocked in wait()."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._blocked: dict[str, threading.Event] = {}

    def blocked(self, name: str) -> threading.Event:
        """Set once the thread called `name` has waited on this condition."""
        with self._guard:
            return self._blocked.setdefault(name, threading.Event())

    def wait(self, timeout: float | None = None) -> bool:
        self.blocked(threading.current_thread().name).set()
        return super().wait(timeout)


class Worker(threading.Thread):
    """A daemon thread that keeps what its work raised, so `finish` can raise it in the test."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the test thread by finish()
            self.error = exc


def watched_lock() -> tuple[ReadWriteLock, WatchedCondition]:
    """A lock whose condition reports which threads are waiting on it."""
    lock = ReadWriteLock()
    condition = WatchedCondition()
    lock._cond = condition
    return lock, condition


def start(name: str, work: Callable[[], None]) -> Worker:
    """`work` running in a new thread called `name`."""
    worker = Worker(name, work)
    worker.start()
    return worker


def finish(*workers: Worker) -> None:
    """Join every worker within the timeout and re-raise the first error one of them hit."""
    for worker in workers:
        worker.join(TIMEOUT)
        assert not worker.is_alive(), f"{worker.name} is stuck"
    for worker in workers:
        if worker.error is not None:
            raise worker.error


def wait_blocked(condition: WatchedCondition, name: str) -> None:
    """Return once thread `name` is blocked on the lock; fail if it never blocks."""
    assert condition.blocked(name).wait(TIMEOUT), f"{name} never had to wait for the lock"


def reader(lock: ReadWriteLock, entered: threading.Event) -> Callable[[], None]:
    """Work that takes the read lock and says so."""

    def work() -> None:
        with lock.read():
            entered.set()

    return work


def writer(lock: ReadWriteLock, entered: threading.Event) -> Callable[[], None]:
    """Work that takes the write lock and says so."""

    def work() -> None:
        with lock.write():
            entered.set()

    return work


def assert_idle(lock: ReadWriteLock) -> None:
    """Nobody holds or waits for the lock, and a writer then a reader get it at once."""
    assert (lock._readers, lock._writer, lock._writers_waiting) == (0, False, 0)
    wrote, read = threading.Event(), threading.Event()
    finish(start("idle-writer", writer(lock, wrote)))
    finish(start("idle-reader", reader(lock, read)))
    assert wrote.is_set() and read.is_set()


# --- sharing and exclusion ---------------------------------------------------------------------


def test_many_readers_hold_the_lock_at_once() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(4, timeout=TIMEOUT)  # passes only when all four are in together

    def work() -> None:
        with lock.read():
            inside.wait()

    finish(*[start(f"reader-{n}", work) for n in range(4)])
    assert_idle(lock)


def test_a_writer_excludes_readers() -> None:
    lock, condition = watched_lock()
    entered = threading.Event()
    with lock.write():
        worker = start("reader", reader(lock, entered))
        wait_blocked(condition, "reader")
        assert not entered.is_set()
    finish(worker)
    assert entered.is_set()
    assert_idle(lock)


def test_a_writer_excludes_other_writers() -> None:
    lock, condition = watched_lock()
    entered = threading.Event()
    with lock.write():
        worker = start("second-writer", writer(lock, entered))
        wait_blocked(condition, "second-writer")
        assert not entered.is_set()
    finish(worker)
    assert entered.is_set()
    assert_idle(lock)


def test_a_reader_excludes_writers() -> None:
    lock, condition = watched_lock()
    entered = threading.Event()
    with lock.read():
        worker = start("writer", writer(lock, entered))
        wait_blocked(condition, "writer")
        assert not entered.is_set()
        assert lock._writers_waiting == 1
    finish(worker)
    assert entered.is_set()
    assert_idle(lock)


def test_readers_queued_behind_a_writer_all_get_in_together_after_it() -> None:
    lock, condition = watched_lock()
    inside = threading.Barrier(3, timeout=TIMEOUT)

    def work() -> None:
        with lock.read():
            inside.wait()

    with lock.write():
        workers = [start(f"reader-{n}", work) for n in range(3)]
        for n in range(3):
            wait_blocked(condition, f"reader-{n}")
    finish(*workers)
    assert_idle(lock)


# --- writer preference -------------------------------------------------------------------------


def test_a_new_reader_queues_behind_a_waiting_writer() -> None:
    lock, condition = watched_lock()
    events: list[str] = []
    late_reader_in = threading.Event()

    def write() -> None:
        with lock.write():
            events.append("writer in")
            events.append("writer out")

    def read() -> None:
        with lock.read():
            events.append("late reader in")
            late_reader_in.set()

    with lock.read():
        waiting_writer = start("writer", write)
        wait_blocked(condition, "writer")
        # Only readers hold the lock, yet a reader arriving now must not overtake the writer.
        late_reader = start("late-reader", read)
        wait_blocked(condition, "late-reader")
        assert not late_reader_in.is_set()
        assert events == []
    finish(waiting_writer, late_reader)
    assert events == ["writer in", "writer out", "late reader in"]
    assert_idle(lock)


# --- errors inside the block -------------------------------------------------------------------


def test_a_reader_that_raises_releases_the_lock() -> None:
    lock = ReadWriteLock()
    with pytest.raises(RuntimeError, match="search failed"):
        with lock.read():
            raise RuntimeError("search failed")
    assert_idle(lock)


def test_a_writer_that_raises_releases_the_lock() -> None:
    lock = ReadWriteLock()
    with pytest.raises(RuntimeError, match="swap failed"):
        with lock.write():
            raise RuntimeError("swap failed")
    assert_idle(lock)


def test_a_raising_writer_lets_waiting_readers_in() -> None:
    lock, condition = watched_lock()
    entered = threading.Event()
    with pytest.raises(RuntimeError, match="swap failed"):
        with lock.write():
            worker = start("reader", reader(lock, entered))
            wait_blocked(condition, "reader")
            raise RuntimeError("swap failed")
    finish(worker)
    assert entered.is_set()
    assert_idle(lock)


# --- under contention --------------------------------------------------------------------------


def test_exclusion_holds_under_contention() -> None:
    lock = ReadWriteLock()
    counts = threading.Lock()
    active = {"readers": 0, "writers": 0}
    violations: list[str] = []

    def enter(kind: str) -> None:
        with counts:
            active[kind] += 1
            if active["writers"] > 1 or (active["writers"] and active["readers"]):
                violations.append(f"{active}")

    def leave(kind: str) -> None:
        with counts:
            active[kind] -= 1

    def work(kind: str) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(300):
                with lock.write() if kind == "writers" else lock.read():
                    enter(kind)
                    leave(kind)

        return loop

    workers = [start(f"reader-{n}", work("readers")) for n in range(4)]
    workers += [start(f"writer-{n}", work("writers")) for n in range(2)]
    finish(*workers)
    assert violations == []
    assert_idle(lock)
