"""Issue #24's "done when", as a benchmark: a new user's MobileNetV2 on their own 10-class photo folder, one command.

A torchvision MobileNetV2 with a 10-class head, saved as a state_dict beside its factory
(``torchvision:mobilenet_v2 --model-arg num_classes=10 --weights w.pt``), and a folder of 10 class folders of
JPEG photos of 224-320 px (5,000 train / 1,000 val by default). The photos are CIFAR-10 images from
``../shared/data`` upscaled to a random size each (no 224 px photo set ships here); they are written once
outside the repository (``$TMPDIR/edgeprune-user-story``). Then, timed, exactly what the user types::

    edgeprune compress --model torchvision:mobilenet_v2 --model-arg num_classes=10 --weights w.pt \\
        --data photos/ --input-size 224 --target cpu-ort --budget latency=0.5x --epochs 1 --out OUT

"Once the device has been profiled": the cpu-ort device cost model is built first (``edgeprune profile
--target cpu-ort``, timed on its own, or reused with ``--device-model PATH``) and is not part of the 30 minutes.
No MobileNetV2 trained at 224 px exists here, so the benchmark first makes "the user's model" (outside the
timed part, cached in the work folder): torchvision MobileNetV2 from random init (seed 0) trained on the folder's
train split with progressive resizing (``--pretrain 96:6,224:1``: 6 epochs at 96 px, then 1 at 224 px; SGD,
cosine). Random-init weights with near-tied logits make any int8 engine fail the top-1 agreement gate (tried
first: 78% agreement, int8 on a single layer already 85%), which a trained model does not.

Goal: the budget is met on measurement and the compress wall time is under 30 minutes on 2 cores.
Run: .venv/bin/python benchmarks/user_story.py [--device-model PATH] [--train 5000] [--val 1000]
Writes benchmarks/results/user-story-mnv2-224-cpu-ort.json (``--out`` for another path).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.npz"
OUT = ROOT / "benchmarks" / "results" / "user-story-mnv2-224-cpu-ort.json"
GOAL_S = 30 * 60


def make_folder(root: Path, train: int, val: int, seed: int = 0) -> float:
    """Write ``root/{train,val}/<class>/*.jpg`` (CIFAR-10 upscaled to 224-320 px) unless complete; seconds spent."""
    from PIL import Image

    marker = root / f".complete-{train}-{val}"
    if marker.exists():
        return 0.0
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    z = np.load(SHARED)
    classes = [str(c) for c in z["classes"]]
    rng = np.random.default_rng(seed)
    for split, key, n in (("train", "train", train), ("val", "test", val)):
        blob, off, lab = z[f"{key}_jpeg"], z[f"{key}_offsets"], z[f"{key}_labels"]
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in rng.choice(len(lab), n, replace=False):
            img = Image.open(io.BytesIO(blob[off[i]:off[i + 1]].tobytes())).convert("RGB")
            w, h = (int(v) for v in rng.integers(224, 321, 2))
            img.resize((w, h), Image.Resampling.BICUBIC).save(root / split / classes[lab[i]] / f"{i:05d}.jpg", quality=90)
    marker.write_text("done\n")
    return time.perf_counter() - t


def parse_schedule(text: str) -> list[tuple[int, int]]:
    """``"96:6,224:1"`` -> [(96, 6), (224, 1)] (input size, epochs); ``""`` -> no training."""
    return [(int(a), int(b)) for a, b in (part.split(":") for part in text.split(",") if part.strip())]


def _epoch(model: Any, loader: Any, opt: Any, sched: Any) -> float:
    import torch.nn.functional as F

    model.train()
    total = n = 0.0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total, n = total + float(loss) * len(y), n + len(y)
    return total / max(n, 1)


def _top1(model: Any, loader: Any) -> float:
    import torch

    model.eval()
    hit = n = 0
    with torch.no_grad():
        for x, y in loader:
            hit, n = hit + int((model(x).argmax(1) == y).sum()), n + len(y)
    return 100.0 * hit / max(n, 1)


def make_weights(path: Path, photos: Path, schedule: list[tuple[int, int]]) -> dict[str, Any]:
    """The user's state_dict: torchvision MobileNetV2 (10 classes, seed 0) trained on ``photos`` by ``schedule``;
    cached beside ``path`` (reused when the schedule matches)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from edgeprune.data.folder import FolderConfig, folder_loaders
    from edgeprune.models.hub import import_torchvision

    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("schedule") == [list(x) for x in schedule]:  # JSON has no tuples
        return {**json.loads(meta.read_text()), "reused": True}
    torch.manual_seed(0)
    model = import_torchvision().models.mobilenet_v2(num_classes=10)
    info: dict[str, Any] = {"factory": "torchvision.models.mobilenet_v2(num_classes=10)", "init": "random (seed 0)",
                            "schedule": schedule, "stages": []}
    t0 = time.perf_counter()
    total_steps = 0
    loaders = []
    for size, epochs in schedule:
        cfg = FolderConfig(input_size=size, batch_size=64, crop_scale=(0.35, 1.0))
        tr, va = folder_loaders(photos, cfg)
        loaders.append((size, epochs, tr, va))
        total_steps += epochs * len(tr)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=max(total_steps, 1), pct_start=0.15)
    for size, epochs, tr, va in loaders:
        for e in range(epochs):
            loss = _epoch(model, tr, opt, sched)
            print(f"[user-story] pretrain {size}px epoch {e + 1}/{epochs}: loss {loss:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        info["stages"].append({"size": size, "epochs": epochs, "val_top1": round(_top1(model, va), 2)})
        print(f"[user-story] pretrain {size}px: val top-1 {info['stages'][-1]['val_top1']}%", flush=True)
    info["train_s"] = round(time.perf_counter() - t0, 1)
    torch.save(model.state_dict(), path)
    meta.write_text(json.dumps(info))
    return info


def device_model(args: argparse.Namespace, profiles: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """The cpu-ort device cost model in ``profiles``: copied from ``--device-model`` or built here (timed)."""
    dst = profiles / "cpu-ort.device.json"
    if args.device_model:
        shutil.copyfile(args.device_model, dst)
        return {"reused": str(args.device_model), "build_s": None}
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "edgeprune", "profile", "--target", "cpu-ort", "--profiles", str(profiles)]
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise SystemExit(f"device model build failed (exit {rc}); log: {log}")
    return {"reused": None, "build_s": round(time.perf_counter() - t, 1)}


def main(argv: list[str] | None = None) -> int:
    """Build the folder and weights, time one compress, print and write the result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--budget", default="latency=0.5x")
    ap.add_argument("--pretrain", default="96:6,224:1",
                    help="the user's model: SIZE:EPOCHS,... of training from random init before the timed run")
    ap.add_argument("--device-model", help="a finished cpu-ort device model to reuse (else it is built here, timed)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "edgeprune-user-story"))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from edgeprune.environment import machine_info
    from edgeprune.fileio import write_json

    work = Path(args.work)
    photos, cache, run_out = work / "photos", work / "cache", work / "out"
    for d in (cache, run_out):
        if d.exists():
            shutil.rmtree(d)
    profiles = cache / "profiles"
    profiles.mkdir(parents=True)
    env = dict(os.environ, EDGEPRUNE_CACHE_DIR=str(cache),
               PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    doc: dict[str, Any] = {"benchmark": "user_story", "issue": 24, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                           "machine": machine_info(), "notes": list(args.note),
                           "data": {"train": args.train, "val": args.val, "classes": 10,
                                    "what": "CIFAR-10 images (../shared/data) upscaled to a random 224-320 px each"}}
    doc["data"]["generate_s"] = round(make_folder(photos, args.train, args.val), 1)
    weights = work / "mnv2_10class.pt"
    doc["weights"] = make_weights(weights, photos, parse_schedule(args.pretrain))
    doc["device_model"] = device_model(args, profiles, env, work / "device-model.log")
    cmd = ["compress", "--model", "torchvision:mobilenet_v2", "--model-arg", "num_classes=10", "--weights", str(weights),
           "--data", str(photos), "--input-size", "224", "--target", "cpu-ort", "--budget", args.budget,
           "--epochs", str(args.epochs), "--profiles", str(profiles), "--out", str(run_out)]
    doc["command"] = "edgeprune " + " ".join(cmd)
    print(f"[user-story] {doc['command']}", flush=True)
    doc["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    log = work / "compress.log"
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "edgeprune", *cmd], env=env, stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode
    wall = time.perf_counter() - t0
    doc["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc.update(exit_code=rc, wall_s=round(wall, 1), goal_s=GOAL_S, log=str(log))
    rep_path = run_out / "report.json"
    if rep_path.exists():
        rep = json.loads(rep_path.read_text())
        for k in ("budget_met", "budget_detail", "dense", "compressed", "speedup", "verify", "stage_seconds", "time_estimate"):
            doc[k] = rep.get(k)
        est = rep.get("time_estimate") or {}
        doc["estimate_within_2x"] = bool(est) and 0.5 <= est["ratio"] <= 2.0  # issue 23's "right within 2x"
    else:
        doc["error"] = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
    doc["under_30_min"] = wall < GOAL_S
    doc["done_when_met"] = bool(rc == 0 and doc.get("budget_met") and wall < GOAL_S)
    write_json(Path(args.out), doc)
    print(json.dumps({k: doc.get(k) for k in ("exit_code", "wall_s", "budget_met", "budget_detail", "speedup",
                                               "under_30_min", "done_when_met", "stage_seconds", "time_estimate",
                                               "estimate_within_2x")}, indent=1))
    return 0 if doc["done_when_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
