"""``torchrun -m edgeprune compress`` / ``apply``: rank 0 measures, plans and writes; every rank fine-tunes with DDP."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset, WeightedRandomSampler

from edgeprune.errors import BadInput
from edgeprune.pipeline.distributed import (
    Ranks,
    RankStopped,
    backend_for,
    current_ranks,
    from_main,
    process_group,
    torchrun_env,
)
from edgeprune.pipeline.stages import Stages
from edgeprune.recover.loader import IterableLoader, shard_loader

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the environment torchrun sets


def test_torchrun_env_reads_rank_world_and_local_rank() -> None:
    assert torchrun_env({}) == Ranks(0, 1, 0) and not Ranks().active and Ranks().is_main
    r = torchrun_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert r == Ranks(3, 4, 1) and r.active and not r.is_main
    assert torchrun_env({"WORLD_SIZE": "2", "RANK": "1"}).local_rank == 1  # no LOCAL_RANK: the rank
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}, {"RANK": "-1"}):
        with pytest.raises(BadInput, match="bad torchrun environment"):
            torchrun_env(bad)
    assert current_ranks({"WORLD_SIZE": "2", "RANK": "1"}) == Ranks(1, 2, 1)
    assert backend_for(None) == "gloo" and backend_for("cpu") == "gloo" and backend_for("cuda:1") == "nccl"


def test_one_process_needs_no_group() -> None:
    with process_group(Ranks()) as r:
        assert r == Ranks() and not torch.distributed.is_initialized()
    assert from_main(Ranks(), lambda: {"keep": {"g": [0, 1]}}) == {"keep": {"g": [0, 1]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plan_broadcast_from_rank0_with_a_gloo_group_of_one(monkeypatch) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("WORLD_SIZE", "3")  # a group the caller set up wins over the environment
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        assert current_ranks() == Ranks(0, 1, 0)
        with process_group(Ranks(0, 2)) as r:  # an existing group is used and left alone
            assert r.world == 1
        assert dist.is_initialized()
        main = Ranks(0, 2)  # rank 0 of a (pretend) job: computes, broadcasts over the real group of one
        plan = {"keep": {"g1": [0, 2, 5]}, "precisions": {"conv1": "int8"}}
        assert from_main(main, lambda: plan) == plan

        def fails():
            raise BadInput("plan does not match the model")

        with pytest.raises(BadInput, match="does not match"):  # rank 0 re-raises its own error
            from_main(main, fails)
    finally:
        dist.destroy_process_group()


def test_followers_get_rank0s_plan_or_its_failure(monkeypatch) -> None:
    import torch.distributed as dist

    sent: list = []
    monkeypatch.setattr(dist, "broadcast_object_list", lambda box, src=0: box.__setitem__(0, sent[0]))
    follower = Ranks(1, 2)
    sent[:] = [("ok", {"keep": {"g": [1]}})]
    assert from_main(follower, lambda: pytest.fail("a follower must not compute")) == {"keep": {"g": [1]}}
    sent[:] = [("failed", 2, "budget names target 'x'")]
    with pytest.raises(RankStopped, match="rank 0 stopped: budget names target") as err:
        from_main(follower, lambda: None)
    assert err.value.exit_code == 2 and err.value.said_by_rank0


def test_stages_of_a_follower_write_nothing(tmp_path) -> None:
    st = Stages(tmp_path / "out", resume=True, write=False)
    assert st.json("plan", lambda: {"a": 1}) == {"a": 1}
    assert st.tensors("finetuned", lambda: {"w": torch.ones(2)})["w"].sum() == 2
    assert not (tmp_path / "out").exists() and not st.saved("plan")
    main = Stages(tmp_path / "out", resume=True)
    main.json("plan", lambda: {"a": 1})
    assert main.saved("plan") and not main.saved("finetuned")


# ---------------------------------------------------------------- sharding a DataLoader


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def _indices(loader: IterableLoader) -> list[int]:
    return [int(v) for x, _y in loader.epoch() for v in x[:, 0]]


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_map_style_dataloader_is_sharded_with_a_distributed_sampler(shuffle: bool) -> None:
    import numpy as np

    ds = TensorDataset(torch.arange(40).float().unsqueeze(1), torch.zeros(40, dtype=torch.long))
    dl = DataLoader(ds, batch_size=4, shuffle=shuffle, generator=torch.Generator().manual_seed(0))
    logs = [_Log(), _Log()]
    loaders = [IterableLoader(dl, None, np.random.default_rng(0), rank=r, world=2, ui=logs[r]) for r in range(2)]
    assert all(ld.sharded is not None for ld in loaders) and "DistributedSampler" in logs[0].lines[0]
    assert [ld.steps for ld in loaders] == [5, 5] and loaders[0].per_epoch == 40
    a, b = _indices(loaders[0]), _indices(loaders[1])
    assert len(a) == len(b) == 20 and sorted(a + b) == list(range(40))  # disjoint shares that cover the set
    if shuffle:  # a new order each pass, the same split logic on both ranks
        a2, b2 = _indices(loaders[0]), _indices(loaders[1])
        assert sorted(a2 + b2) == list(range(40)) and a2 != a
    capped = IterableLoader(dl, 12, np.random.default_rng(0), rank=0, world=2)
    assert capped.steps == 2 and len(_indices(capped)) == 8


class _Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.tensor([float(i)]), torch.tensor(0)) for i in range(16)])


def test_other_data_falls_back_to_every_world_th_batch_with_a_note() -> None:
    import numpy as np

    ds = TensorDataset(torch.arange(16).float().unsqueeze(1), torch.zeros(16, dtype=torch.long))
    weighted = DataLoader(ds, batch_size=4, sampler=WeightedRandomSampler(torch.ones(16), 16))
    batches = [(torch.full((4, 1), float(i)), torch.zeros(4, dtype=torch.long)) for i in range(4)]
    for data in (weighted, DataLoader(_Stream(), batch_size=4), batches):
        assert shard_loader(data, 0, 2) is None
    log = _Log()
    ld = IterableLoader(batches, None, np.random.default_rng(0), rank=1, world=2, ui=log)
    assert "cannot take a DistributedSampler" in log.lines[0] and ld.steps == 2
    assert [float(x[0, 0]) for x, _ in ld.epoch()] == [1.0, 3.0]


# ---------------------------------------------------------------- the real thing: 2 CPU processes


def _torchrun(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "edgeprune", *args]
    try:
        return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun {' '.join(args[:1])} did not finish in {timeout:g} s")


@pytest.mark.slow
def test_compress_and_apply_under_torchrun_with_two_cpu_processes(tmp_path) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import edgeprune as ep
    from tests.test_folder import write_folder
    from tests.tiny import tiny_net, tiny_npz

    folder = write_folder(tmp_path / "imgs", classes=tuple(f"c{i}" for i in range(10)), per_class=16)
    work = tmp_path / "work"
    work.mkdir()
    p = _torchrun(["compress", "--model", "tests.tiny:tiny_net", "--data", str(folder), "--input-size", "16",
                   "--workers", "0", "--budget", "macs=0.6x", "--epochs", "1", "--quick", "--out", "run"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(x.name for x in work.iterdir()) == ["run"]  # exactly one output folder
    report = json.loads((work / "run" / "report.json").read_text())
    assert report["world_size"] == 2 and report["budget_met"]
    out = p.stdout + p.stderr
    assert "2 processes" in out and "DistributedSampler" in out  # the folder's loader was sharded
    assert out.count("edgeprune compress") == 1 and out.count("fine-tuning 2 steps") == 1  # only rank 0 talks
    small = ep.load_pruned(tiny_net(), work / "run" / "plan.json", work / "run" / "weights.pt")
    saved = torch.load(work / "run" / "weights.pt")
    assert all(torch.equal(v, saved[k]) for k, v in small.state_dict().items())
    # --resume: rank 0 reads its checkpoints (plan, fine-tuned weights), the other rank has nothing left to do
    p = _torchrun(["compress", "--model", "tests.tiny:tiny_net", "--data", str(folder), "--input-size", "16",
                   "--workers", "0", "--budget", "macs=0.6x", "--epochs", "1", "--quick", "--out", "run", "--resume"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "fine-tuning 2 steps" not in p.stdout + p.stderr
    again = torch.load(work / "run" / "weights.pt")
    assert all(torch.equal(v, saved[k]) for k, v in again.items())

    npz = tiny_npz(tmp_path / "d.npz", n=300)  # apply: the ImageSet fast path, sharded by BatchLoader
    p = _torchrun(["apply", "--plan", str(work / "run" / "plan.json"), "--data", npz, "--epochs", "1", "--quick",
                   "--out", "applied", "--json"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(x.name for x in work.iterdir()) == ["applied", "run"]
    report = json.loads((work / "applied" / "report.json").read_text())
    assert report["world_size"] == 2 and report["plan"]["planner"] == "file"
    assert json.loads(p.stdout)["world_size"] == 2  # one JSON document on stdout: rank 0's
