"""DistributedDataParallel fine-tuning: 2 processes (CPU with gloo; CUDA where present) end with identical weights."""
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


def _worker(rank: int, world: int, port: int, npz: str, out: str, device: str | None = None, backend: str = "auto") -> None:
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
                    checkpoint_dir=os.path.join(out, run, "ck"), device=device, backend=backend)
        torch.save({"state": model.state_dict(), "world": r.world_size, "hist": r.history},
                   os.path.join(out, run, f"rank{rank}.pt"))
        if run == "user-init":
            dist.destroy_process_group()
        else:
            assert not dist.is_initialized()  # recover() cleaned up what it set up


def _run_one(rank: int, run: str, world: int, port: int, npz: str, out: str, device: str | None = None,
             backend: str = "auto") -> None:
    global RUNS
    RUNS = (run,)
    _worker(rank, world, port, npz, out, device, backend)


def _spawn_all(runs: tuple[str, ...], npz: str, out: str, device: str | None = None, backend: str = "auto") -> None:
    for run in runs:
        ctx = mp.spawn(_run_one, args=(run, 2, _free_port(), npz, out, device, backend), nprocs=2, join=False)
        deadline = time.monotonic() + 180
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"DDP case {run} did not finish in 180 s (gloo hang)")


def test_two_gloo_ranks_end_identical(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    npz = tiny_npz(tmp_path / "tiny.npz", n=300)
    _spawn_all(("torchrun-env", "user-init"), npz, str(tmp_path))
    _check_identical(tmp_path, ("torchrun-env", "user-init"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (torch sees none)")
def test_two_cuda_ranks_end_identical(tmp_path):
    # one GPU per rank with NCCL where there are two; on one GPU both ranks share it through gloo
    # (NCCL refuses two ranks on one device)
    two = torch.cuda.device_count() >= 2
    npz = tiny_npz(tmp_path / "tiny.npz", n=300)
    _spawn_all(("torchrun-env",), npz, str(tmp_path), device="cuda" if two else "cuda:0", backend="auto" if two else "gloo")
    _check_identical(tmp_path, ("torchrun-env",))


def _check_identical(tmp_path, runs: tuple[str, ...]) -> None:
    fresh = tiny_net().state_dict()
    for run in runs:
        a = torch.load(tmp_path / run / "rank0.pt", weights_only=True, map_location="cpu")
        b = torch.load(tmp_path / run / "rank1.pt", weights_only=True, map_location="cpu")
        assert a["world"] == b["world"] == 2
        for k in a["state"]:
            assert torch.equal(a["state"][k], b["state"][k]), (run, k)
        same = ("step", "loss", "lr", "val_top1")  # global loss and validation top-1 agree on both ranks
        assert [{k: h[k] for k in same} for h in a["hist"]] == [{k: h[k] for k in same} for h in b["hist"]]
        assert len(a["hist"]) == 2
        assert (tmp_path / run / "ck" / "finetune.ckpt").exists()  # written by rank 0
        assert any(not torch.equal(fresh[k], a["state"][k]) for k in fresh)
