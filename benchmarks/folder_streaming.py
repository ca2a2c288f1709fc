"""Fine-tuning over a large image folder at 224 px streams from disk: peak memory does not grow with the dataset.

Generates (once, outside the repository: $TMPDIR/edgeprune-folder-bench by default) a folder of ``--images``
random-size JPEGs in ``--classes`` class folders, then runs one epoch of fine-tuning of a small CNN at
``--size`` px through ``edgeprune.data.folder`` (random-resized-crop + flip, ``--workers`` decoding processes),
evaluates on the val split, and reports the peak memory of the main process and its workers together:

- ``peak_rss_total_mb``: the largest sum of RSS over the main process and its DataLoader workers, sampled every
  0.2 s (conservative: pages the forked workers share with the main process, torch's libraries for a start,
  are counted once per process);
- ``peak_pss_total_mb``: the same with PSS (each shared page divided among the processes sharing it), the
  memory the run really takes;
- ``main_vmhwm_mb``: the kernel's own high-water mark of the main process's RSS.

The goal (issue #24) is under 2 GB for a 50,000-image folder with 2 workers.

Run: .venv/bin/python benchmarks/folder_streaming.py [--images 50000] [--workers 2] [--out PATH]
(``--images 2000`` for a quick look). Writes benchmarks/results/folder-streaming.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_MB = 2048


def _write_images(job: tuple[str, int, int, int, int]) -> int:
    """Write images ``start..stop`` of one class folder: smooth random colour fields with a class tint."""
    from PIL import Image

    folder, cls, start, stop, seed = job
    rng = np.random.default_rng(seed)
    for i in range(start, stop):
        w, h = (int(v) for v in rng.integers(160, 520, 2))
        small = rng.integers(0, 160, (12, 12, 3), dtype=np.uint8)
        small[..., cls % 3] += 90
        small[..., (cls // 3) % 3] //= 2
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        img.save(os.path.join(folder, f"{i:06d}.jpg"), quality=85)
    return stop - start


def generate(root: Path, images: int, classes: int, procs: int = 2) -> float:
    """Write the folder unless a complete one is there; returns the seconds spent."""
    marker = root / f".complete-{images}-{classes}"
    if marker.exists():
        return 0.0
    t = time.perf_counter()
    per = [images // classes + (1 if c < images % classes else 0) for c in range(classes)]
    jobs = []
    for c, n in enumerate(per):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for start in range(0, n, 500):
            jobs.append((str(d), c, start, min(n, start + 500), 1000 * c + start))
    done = 0
    with Pool(procs) as pool:
        for k in pool.imap_unordered(_write_images, jobs):
            done += k
            print(f"\rgenerating {done}/{images} JPEGs in {root}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    marker.write_text("done\n")
    return time.perf_counter() - t


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _kb(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Samples RSS and PSS of this process and its children (DataLoader workers) from /proc."""

    def __init__(self, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.stop = threading.Event()
        self.peak_rss_kb = self.peak_pss_kb = self.peak_workers = 0
        self.peak_main_rss_kb = self.peak_worker_rss_kb = 0

    def sample(self) -> None:
        """One sample of the main process and every child process."""
        pid = os.getpid()
        kids = _children(pid)
        main_rss = _kb(f"/proc/{pid}/status", "VmRSS:")
        kid_rss = [_kb(f"/proc/{k}/status", "VmRSS:") for k in kids]
        pss = _kb(f"/proc/{pid}/smaps_rollup", "Pss:") + sum(_kb(f"/proc/{k}/smaps_rollup", "Pss:") for k in kids)
        self.peak_rss_kb = max(self.peak_rss_kb, main_rss + sum(kid_rss))
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_main_rss_kb = max(self.peak_main_rss_kb, main_rss)
        self.peak_worker_rss_kb = max([self.peak_worker_rss_kb, *kid_rss])
        self.peak_workers = max(self.peak_workers, len(kids))

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.sample()


def small_cnn(classes: int):
    """A small CNN for 224 px: a 4x4 stride-4 stem, 3 stride-2 conv-BN-ReLU stages, global pooling, a linear head."""
    from torch import nn

    layers, cin = [nn.Conv2d(3, 16, 4, 4, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)], 16
    for cout in (32, 64, 128):
        layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def main(argv: list[str] | None = None) -> dict:
    """Generate, fine-tune one epoch while sampling memory, evaluate, print and write the JSON."""
    import torch

    from edgeprune.data.folder import FolderConfig, folder_loaders, skipped_images
    from edgeprune.environment import machine_info, versions
    from edgeprune.fileio import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--val-fraction", type=float, default=0.02)
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop the epoch after this many minutes (a busy machine); the JSON says which fraction ran")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "edgeprune-folder-bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "folder-streaming.json"))
    args = ap.parse_args(argv)

    root = Path(args.dir) / f"{args.images}x{args.classes}"
    gen_s = generate(root, args.images, args.classes)
    sampler = MemorySampler()
    sampler.sample()
    rss_before_mb = sampler.peak_main_rss_kb / 1024
    sampler.start()

    cfg = FolderConfig(input_size=args.size, batch_size=args.batch_size, workers=args.workers,
                       val_fraction=args.val_fraction)
    t0 = time.perf_counter()
    train, val = folder_loaders(root, cfg)
    scan_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = small_cnn(args.classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, t1, losses, series = 0, time.perf_counter(), [], []
    n_batches = len(train)
    for b, (x, y) in enumerate(train):
        if args.minutes is not None and time.perf_counter() - t1 > 60 * args.minutes:
            break
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        seen += len(y)
        losses.append(loss.item())
        if b % 50 == 0 or b == n_batches - 1:
            series.append({"images": seen, "peak_rss_total_mb": round(sampler.peak_rss_kb / 1024, 1),
                           "peak_pss_total_mb": round(sampler.peak_pss_kb / 1024, 1)})
            rate = seen / (time.perf_counter() - t1)
            print(f"\rtrain {b + 1}/{n_batches} batches, {rate:.0f} img/s, loss {np.mean(losses[-50:]):.3f}, "
                  f"peak RSS (all) {sampler.peak_rss_kb / 1024:.0f} MB, PSS {sampler.peak_pss_kb / 1024:.0f} MB",
                  end="", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t1
    print(file=sys.stderr)
    model.eval()
    correct = total = 0
    t2 = time.perf_counter()
    with torch.no_grad():
        for x, y in val:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    eval_s = time.perf_counter() - t2
    sampler.stop.set()
    sampler.join()
    sampler.sample()

    peak_rss_mb = sampler.peak_rss_kb / 1024
    res = {
        "what": f"one epoch of fine-tuning a small CNN at {args.size} px over a {args.images}-image folder of random-size "
                f"JPEGs streamed by edgeprune.data.folder ({args.workers} workers), then evaluation on the val split",
        "images": args.images, "classes": args.classes, "train_images": len(train.dataset), "val_images": len(val.dataset),
        "train_images_seen": seen, "epoch_fraction": round(seen / (n_batches * args.batch_size), 3),
        "peak_memory_by_images_seen": series,
        "input_size": args.size, "batch_size": args.batch_size, "workers": args.workers,
        "generate_s": round(gen_s, 1), "scan_s": round(scan_s, 2), "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "train_images_per_s": round(seen / train_s, 1), "eval_images_per_s": round(total / max(eval_s, 1e-9), 1),
        "final_train_loss": round(float(np.mean(losses[-50:])), 4), "val_top1": round(100.0 * correct / max(total, 1), 2),
        "skipped_images": skipped_images(train, val),
        "main_rss_before_mb": round(rss_before_mb, 1),
        "peak_rss_total_mb": round(peak_rss_mb, 1), "peak_pss_total_mb": round(sampler.peak_pss_kb / 1024, 1),
        "peak_main_rss_mb": round(sampler.peak_main_rss_kb / 1024, 1),
        "main_vmhwm_mb": round(_kb("/proc/self/status", "VmHWM:") / 1024, 1),
        "peak_worker_rss_mb": round(sampler.peak_worker_rss_kb / 1024, 1), "processes_seen": 1 + sampler.peak_workers,
        "goal_mb": GOAL_MB, "pass": peak_rss_mb < GOAL_MB,
        "machine": machine_info(), "versions": versions(), "torch_threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for k in ("train_images_per_s", "peak_rss_total_mb", "peak_pss_total_mb", "peak_main_rss_mb", "peak_worker_rss_mb",
              "val_top1"):
        print(f"{k:>22}: {res[k]}")
    print(f"{'cpu':>22}: {res['machine']['cpu']} ({res['machine']['cores']} cores)")
    print(f"{'goal':>22}: peak RSS of main + workers < {GOAL_MB} MB: {'PASS' if res['pass'] else 'FAIL'}")
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
