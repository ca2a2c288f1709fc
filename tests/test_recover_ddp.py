"""DistributedDataParallel fine-tuning: 2 CPU processes with gloo end with identical weights."""
from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from tests.tiny import tiny_net, tiny_npz


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# re-initialising gloo on the same port in one process (the "user-init" case after the
# torchrun-style one) hung intermittently here; each case gets its own processes and port
RUNS: tuple[str, ...] = ()


def _worker(rank: int, world: int, port: int, npz: str, out: str) -> None:
    # what torchrun sets for each process
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from edgeprune.data import load_data
    from edgeprune.recover import recover

    data = load_data(npz)
    for run in RUNS:
        if run == "user-init":  # a user script that set up the process group itself
            dist.init_process_group("gloo", rank=rank, world_size=world)
        # torchrun-env: recover() initialises the group from the environment and tears it down
        torch.manual_seed(100 + rank)  # different starting weights per rank: DDP must broadcast rank 0's
        model = tiny_net()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        os.makedirs(os.path.join(out, run), exist_ok=True)
        r = recover(model, data, epochs=2, lr=0.05, batch_size=32, bn_batches=2, val_fraction=0.1,
                    checkpoint_dir=os.path.join(out, run, "ck"))
        torch.save({"state": model.state_dict(), "world": r.world_size, "hist": r.history},
                   os.path.join(out, run, f"rank{rank}.pt"))
        if run == "user-init":
            dist.destroy_process_group()
        else:
            assert not dist.is_initialized()  # recover() cleaned up what it set up


def _run_one(rank: int, run: str, world: int, port: int, npz: str, out: str) -> None:
    global RUNS
    RUNS = (run,)
    _worker(rank, world, port, npz, out)


def test_two_gloo_ranks_end_identical(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    npz = tiny_npz(tmp_path / "tiny.npz", n=300)
    for run in ("torchrun-env", "user-init"):
        ctx = mp.spawn(_run_one, args=(run, 2, _free_port(), npz, str(tmp_path)), nprocs=2, join=False)
        deadline = time.monotonic() + 180
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"DDP case {run} did not finish in 180 s (gloo hang)")
    fresh = tiny_net().state_dict()
    for run in ("torchrun-env", "user-init"):
        a = torch.load(tmp_path / run / "rank0.pt", weights_only=True)
        b = torch.load(tmp_path / run / "rank1.pt", weights_only=True)
        assert a["world"] == b["world"] == 2
        for k in a["state"]:
            assert torch.equal(a["state"][k], b["state"][k]), (run, k)
        same = ("step", "loss", "lr", "val_top1")  # global loss and validation top-1 agree on both ranks
        assert [{k: h[k] for k in same} for h in a["hist"]] == [{k: h[k] for k in same} for h in b["hist"]]
        assert len(a["hist"]) == 2
        assert (tmp_path / run / "ck" / "finetune.ckpt").exists()  # written by rank 0
        assert any(not torch.equal(fresh[k], a["state"][k]) for k in fresh)
