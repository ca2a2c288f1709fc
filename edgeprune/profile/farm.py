"""A pool of runners measures layer / kernel samples in parallel: one worker thread per board, one shared queue.

A backend offers its runners through :meth:`edgeprune.backends.base.Backend.runner_pool`:
local backends give a pool of one (:class:`BackendRunner`, exactly the backend's
``time_layer_detail``); a target behind a TVM RPC tracker gives one runner per
free board with the target's key, each holding its own RPC session. The
profiler (:func:`edgeprune.profile.profiler.profile`) and the device-model build
(:func:`edgeprune.costmodel.measure.build_device_model`) hand their pending samples
to :func:`measure_all`, which delivers every result in the calling thread (so the
resumable file is written by one thread only, as results come).

A runner whose board drops out raises :class:`RunnerLost`: its in-flight sample
goes back to the queue (measured by another board), the pool may lease a
replacement (:meth:`RunnerPool.replace`), and the lost runner retires. Samples are
deduplicated by :meth:`LayerSignature.key`; a sample leaves the queue once and
returns only when its measurement failed, so none is lost or measured twice. A
pool of one runs in the calling thread, in order: the single-board path is the
plain loop it always was.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self

from edgeprune.errors import BackendUnavailable

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import Timing, TimingProtocol

#: a sample that made this many runners fail in a row is not handed to another one (it is the sample, not the board)
MAX_LOSSES_PER_SAMPLE = 3

OnResult = Callable[["LayerSignature", "Timing", dict], None]


class RunnerLost(BackendUnavailable):
    """The runner's board dropped out: its in-flight sample must go to another runner."""


class Runner(Protocol):
    """Times one layer / kernel configuration at a time on one device (a board, or this machine)."""

    name: str

    def time(self, sig: LayerSignature) -> tuple[Timing, dict]:
        """``(Timing, meta)`` of ``sig``; raises :class:`RunnerLost` when the device is gone."""
        ...

    def close(self) -> None:
        """Release the device (end the board's lease)."""
        ...


class BackendRunner:
    """The pool of one of a local backend: ``backend.time_layer_detail(sig, target, protocol)``."""

    def __init__(self, backend: Any, target: Target, protocol: TimingProtocol, name: str = "local") -> None:
        self.backend, self.target, self.protocol, self.name = backend, target, protocol, name

    def time(self, sig: LayerSignature) -> tuple[Timing, dict]:
        """Time ``sig`` with the backend's own per-layer path."""
        return self.backend.time_layer_detail(sig, self.target, self.protocol)

    def close(self) -> None:
        """Nothing to release."""


class RunnerPool:
    """The runners a backend offers for a target; a context manager that closes them all."""

    def __init__(self, runners: Sequence[Runner], describe: str = "") -> None:
        if not runners:
            raise BackendUnavailable("a runner pool needs at least one runner")
        self.runners = list(runners)
        self.describe = describe or f"{len(self.runners)} runner(s)"
        self._closed: list[Runner] = []

    def replace(self, lost: Runner | None, others_alive: int) -> Runner | None:
        """A runner (added to :attr:`runners`) to take over from ``lost`` (None: the pool shrinks). Default: none."""
        return None

    def retire(self, runner: Runner) -> None:
        """Close ``runner`` (best effort) and take it out of the pool (later calls do not use it)."""
        if runner in self.runners:
            self.runners.remove(runner)
        if runner in self._closed:
            return
        self._closed.append(runner)
        try:
            runner.close()
        except Exception:  # noqa: BLE001, S110 - a lost board may fail to close; nothing left to release
            pass

    def close(self) -> None:
        """Close every runner."""
        for r in list(self.runners):
            self.retire(r)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unique(sigs: Iterable[LayerSignature]) -> list[LayerSignature]:
    seen: dict[str, LayerSignature] = {}
    for s in sigs:
        seen.setdefault(s.key(), s)
    return list(seen.values())


class _Farm:
    """The shared state of one :func:`measure_all` call."""

    def __init__(self, sigs: list[LayerSignature], pool: RunnerPool, log: Callable[[str], None] | None) -> None:
        self.pool, self.log = pool, log
        self.todo: deque[LayerSignature] = deque(sigs)
        self.losses: dict[str, int] = {}
        self.results: queue.Queue = queue.Queue()
        self.cond = threading.Condition()
        self.stop = False
        self.error: BaseException | None = None
        self.in_flight = 0
        self.alive = 0

    def take(self) -> LayerSignature | None:
        """The next sample (None: nothing left or stopping); waits while samples are in flight elsewhere."""
        with self.cond:
            while True:
                if self.stop or self.error is not None:
                    return None
                if self.todo:
                    self.in_flight += 1
                    return self.todo.popleft()
                if self.in_flight == 0:
                    return None
                self.cond.wait(0.5)  # an in-flight sample may come back to the queue

    def lost(self, runner: Runner, sig: LayerSignature, err: RunnerLost) -> Runner | None:
        """``sig`` goes back to the queue; a replacement runner (or None: this worker ends)."""
        key = sig.key()
        with self.cond:
            self.in_flight -= 1
            self.losses[key] = self.losses.get(key, 0) + 1
            if self.losses[key] >= MAX_LOSSES_PER_SAMPLE:
                self.error = BackendUnavailable(
                    f"{sig.op} {sig.in_channels}x{sig.out_channels} {sig.dtype} failed on {self.losses[key]} runners in turn: {err}")
            else:
                self.todo.appendleft(sig)
            self.cond.notify_all()
        if self.log is not None:
            self.log(f"{runner.name} dropped out ({err}); its sample goes back to the queue")
        self.pool.retire(runner)
        if self.error is not None:
            return None
        with self.cond:
            others = self.alive - 1
        new = self.pool.replace(runner, others)
        if new is not None and self.log is not None:
            self.log(f"{new.name} takes over from {runner.name}")
        return new

    def done(self, sig: LayerSignature, timing: Timing, meta: dict) -> None:
        with self.cond:
            self.in_flight -= 1
            self.cond.notify_all()
        self.results.put((sig, timing, meta))

    def fail(self, err: BaseException) -> None:
        with self.cond:
            self.in_flight -= 1
            if self.error is None:
                self.error = err
            self.cond.notify_all()

    def work(self, runner: Runner | None) -> None:
        """One worker: take, measure, deliver, until the queue is empty (or its board is gone for good)."""
        try:
            while runner is not None:
                sig = self.take()
                if sig is None:
                    return
                try:
                    timing, meta = runner.time(sig)
                except RunnerLost as err:
                    try:
                        runner = self.lost(runner, sig, err)
                    except BaseException as err2:  # noqa: BLE001 - leasing a replacement failed unexpectedly
                        with self.cond:
                            self.error = self.error or err2
                            self.cond.notify_all()
                        return
                    continue
                except BaseException as err:  # noqa: BLE001 - handed to the calling thread, re-raised there
                    self.fail(err)
                    return
                self.done(sig, timing, meta)
        finally:
            with self.cond:
                self.alive -= 1
                self.cond.notify_all()
            self.results.put(None)  # wake the calling thread: a worker ended


def measure_all(
    sigs: Iterable[LayerSignature],
    pool: RunnerPool,
    on_result: OnResult,
    *,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Measure every distinct signature of ``sigs`` on the pool's runners; ``on_result`` gets each in this thread.

    ``should_stop()`` (checked in this thread after each result) stops handing out
    samples; those in flight are still delivered. Raises the first error a runner
    hit (other than a lost board), or :class:`~edgeprune.errors.BackendUnavailable`
    when every runner was lost with samples left. Returns the number of results delivered.
    """
    farm = _Farm(_unique(sigs), pool, log)
    total = len(farm.todo)
    delivered = 0
    if not total:
        return 0
    if not pool.runners:  # every runner was lost in an earlier call
        fresh = pool.replace(None, 0)
        if fresh is None:
            raise BackendUnavailable(f"every runner of {pool.describe} was lost; resume when boards are back")
    if len(pool.runners) == 1:  # the single-board path: this thread, in order
        farm.alive = 1
        runner: Runner | None = pool.runners[0]
        while runner is not None and farm.todo and farm.error is None:
            if should_stop is not None and should_stop():
                break
            sig = farm.todo.popleft()
            farm.in_flight += 1
            try:
                timing, meta = runner.time(sig)
            except RunnerLost as err:
                runner = farm.lost(runner, sig, err)
                continue
            farm.in_flight -= 1
            on_result(sig, timing, meta)
            delivered += 1
        return _finish(farm, delivered, total, should_stop)
    farm.alive = len(pool.runners)
    threads = [threading.Thread(target=farm.work, args=(r,), name=f"edgeprune-farm-{r.name}", daemon=True)
               for r in pool.runners]
    for t in threads:
        t.start()
    try:
        ended = 0
        while ended < len(threads):
            item = farm.results.get()
            if item is None:
                ended += 1
                continue
            sig, timing, meta = item
            on_result(sig, timing, meta)
            delivered += 1
            if should_stop is not None and should_stop():
                with farm.cond:
                    farm.stop = True
                    farm.cond.notify_all()
    finally:
        with farm.cond:
            farm.stop = True
            farm.cond.notify_all()
        for t in threads:
            t.join(timeout=60)
    while not farm.results.empty():  # results that arrived while stopping are kept too
        item = farm.results.get_nowait()
        if item is not None:
            on_result(*item)
            delivered += 1
    return _finish(farm, delivered, total, should_stop)


def _finish(farm: _Farm, delivered: int, total: int, should_stop: Callable[[], bool] | None) -> int:
    if farm.error is not None:
        raise farm.error
    if farm.todo and not (should_stop is not None and should_stop()):
        raise BackendUnavailable(
            f"every runner of {farm.pool.describe} was lost with {len(farm.todo)} of {total} samples left unmeasured; "
            "resume when boards are back")
    return delivered
