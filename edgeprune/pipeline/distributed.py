"""``compress`` / ``apply`` under ``torchrun``: which process this is, one process group, and rank 0's results shared.

``torchrun --nproc-per-node N -m edgeprune compress ...`` starts N copies of the command with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` set. Every copy checks its arguments and loads the model and data; rank 0 alone then
measures, scores and plans (or reads the plan), and sends the plan to the others (:func:`from_main`); every rank
prunes the same way (pruning is deterministic given the plan) and fine-tunes with DistributedDataParallel over
its shard of the data; rank 0 alone compiles, verifies, measures and writes. The other ranks write nothing.
The only state is what ``torch.distributed`` itself keeps (the default process group).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from edgeprune.errors import BadInput, EdgepruneError, first_line

T = TypeVar("T")

# rank 0 may measure, profile and plan for a long while before the others get the plan: wait that long
WAIT = timedelta(hours=4)


class RankStopped(EdgepruneError):
    """Raised on a rank other than 0 when rank 0 failed before sharing its result (rank 0 says why)."""

    said_by_rank0 = True  # the CLI prints nothing more for it


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether there is more than one process."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Whether this process measures, plans, compiles and writes (rank 0)."""
        return self.rank == 0


def torchrun_env(environ: Mapping[str, str] | None = None) -> Ranks:
    """The rank, world size and local rank torchrun set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process if unset."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1") or 1)
        rank = int(env.get("RANK", "0") or 0)
        local = int(env.get("LOCAL_RANK", str(rank)) or 0)
    except ValueError:
        raise BadInput(f"bad torchrun environment: WORLD_SIZE={env.get('WORLD_SIZE')!r} RANK={env.get('RANK')!r} "
                       f"LOCAL_RANK={env.get('LOCAL_RANK')!r} (integers expected)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise BadInput(f"bad torchrun environment: RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return Ranks(rank, world, local)


def current_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """This process's ranks: from a process group the caller already set up, else from torchrun's environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        env = os.environ if environ is None else environ
        rank = dist.get_rank()
        return Ranks(rank, dist.get_world_size(), int(env.get("LOCAL_RANK", str(rank)) or 0))
    return torchrun_env(environ)


def backend_for(train_device: str | None) -> str:
    """The process-group backend: NCCL when fine-tuning on CUDA, gloo otherwise."""
    return "nccl" if train_device is not None and str(train_device).startswith("cuda") else "gloo"


@contextmanager
def process_group(ranks: Ranks, train_device: str | None = None) -> Iterator[Ranks]:
    """The default process group for a multi-process run, created here (env:// from torchrun) and destroyed on exit.

    A group that already exists (a user script that set one up) is used as is and left alone. With one
    process nothing happens. On a normal exit every rank meets in a last barrier, so ranks other than 0
    wait, idle, for rank 0 to finish (a gloo group torn down on one side only was seen to abort a process).
    """
    if not ranks.active:
        yield ranks
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise BadInput(f"WORLD_SIZE={ranks.world} but this torch ({torch.__version__}) has no torch.distributed")
    owned = False
    backend = backend_for(train_device)
    if not dist.is_initialized():
        if backend == "nccl" and torch.cuda.is_available():
            torch.cuda.set_device(ranks.local_rank)  # object collectives on NCCL run on the current device
        dist.init_process_group(backend=backend, timeout=WAIT)
        owned = True
    got = Ranks(dist.get_rank(), dist.get_world_size(), ranks.local_rank)
    try:
        yield got
    except BaseException:
        if owned and dist.is_initialized():
            dist.destroy_process_group()  # torchrun stops the ranks still waiting
        raise
    if owned and dist.is_initialized():
        dist.barrier()  # the others wait (idle) for rank 0's compile and report: every rank tears down together
        dist.destroy_process_group()


def from_main(ranks: Ranks, compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only, its (picklable) result sent to every rank.

    When rank 0 fails, the others raise :class:`RankStopped` with rank 0's exit code instead of
    waiting forever; rank 0 re-raises its own error.
    """
    if not ranks.active:
        return compute()
    import torch.distributed as dist

    box: list[Any] = [None]
    if ranks.is_main:
        try:
            box[0] = ("ok", compute())
        except BaseException as err:
            code = err.exit_code if isinstance(err, EdgepruneError) else 3
            dist.broadcast_object_list([("failed", code, first_line(err))], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, *rest = box[0]
    if status == "failed":
        code, msg = rest
        err = RankStopped(f"rank 0 stopped: {msg}")
        err.exit_code = code
        raise err
    return rest[0]


__all__ = ["WAIT", "RankStopped", "Ranks", "backend_for", "current_ranks", "from_main", "process_group", "torchrun_env"]
