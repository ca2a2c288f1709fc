"""Fine-tuning with SGD (Nesterov) + cosine schedule, augmentation, optional KD from the dense model.

Runs in one process, on the CPU or a CUDA device, or under ``torchrun
--nproc_per_node=N`` with DistributedDataParallel (gloo on CPU, NCCL on CUDA,
one GPU per rank): each rank takes its slice of every global batch, gradients
are averaged, and only rank 0 writes checkpoints and shows progress. See docs/recover.md for the recipe and the measurements
behind its defaults.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data import Dataset, ImageSet
from edgeprune.data.batch import batch_len, call_model, map_inputs, output_tensors, to_device
from edgeprune.data.source import DataSource, as_source
from edgeprune.errors import BadInput
from edgeprune.recover.augment import BatchLoader, Normaliser
from edgeprune.recover.loader import IterableLoader

LossFn = Callable[[Any, Any], torch.Tensor]
EvalFn = Callable[[nn.Module, Any], float]
from edgeprune.ui import QUIET, UI

CHECKPOINT = "finetune.ckpt"


@dataclass(frozen=True)
class RecoverConfig:
    """How to fine-tune a pruned model.

    ``batch_size`` is the global batch: with N processes each takes 1/N of it,
    so the schedule and learning rate do not depend on N. ``kd_alpha`` weights
    the distillation term (soft targets at ``temperature``, scaled by T^2)
    against the label loss when a teacher is given. ``bn_recalibrate``
    re-estimates the BN running statistics on ``bn_batches`` train batches
    *before* fine-tuning (after pruning they are stale; measured to matter a
    lot for short fine-tunes, docs/recover.md); ``bn_final`` re-estimates them
    again *after* fine-tuning: running averages trail the moving weights, by
    far with a low BN momentum (EfficientNet-Lite's 0.01 left a 3-epoch
    fine-tune 9.5 pt below its own weights). ``max_images`` caps the images
    seen per epoch (None = the whole train split). ``val_fraction`` holds out
    part of the train split for early stop (``patience`` epochs without a
    better validation top-1), and ``restore_best`` returns the best epoch's
    weights. ``checkpoint_dir`` gets a checkpoint each epoch; a later call
    with the same model, data and config resumes from it (``resume``), also on
    another device. ``device`` is the torch device to train on ("cpu", "cuda",
    "cuda:1"; None: where the model's parameters already are); the model and
    the teacher are moved there for the run and back afterwards. Under
    torchrun a plain "cuda" means each rank's ``LOCAL_RANK`` GPU, and
    ``backend`` "auto" picks NCCL for CUDA and gloo for the CPU.
    ``memory_format`` "auto" trains a model with 2-D convolutions in
    channels_last (NHWC) and gives it back contiguous: the same fp32 maths,
    1.6x faster for EfficientNet-Lite0 and 1.2x for ResNet-56 on one CPU
    thread (docs/recover.md).
    """

    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd_alpha: float = 0.7
    temperature: float = 4.0
    augment: bool = True
    bn_recalibrate: bool = True
    bn_batches: int = 20
    bn_final: bool = True  # re-estimate BN statistics after fine-tuning too: running averages lag the weights
    val_fraction: float = 0.0
    patience: int | None = None
    restore_best: bool = True
    max_images: int | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = True
    bn_l1: float = 0.0  # network-slimming L1 penalty on BN scales
    distributed: str = "auto"  # auto: DDP when torchrun's WORLD_SIZE > 1 or a process group exists; off: never
    backend: str = "auto"  # auto: nccl when training on CUDA, else gloo
    device: str | None = None  # None: the device of the model's parameters
    prefetch: int = 3
    threads: int | None = None  # torch intra-op threads while fine-tuning (None: leave as is); restored after
    memory_format: str = "auto"  # auto: channels_last for a model with 2-D convolutions; "channels_last" or "contiguous"



@dataclass
class RecoverResult:
    """What fine-tuning did."""

    model: nn.Module
    epochs_run: float
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    data_wait_fraction: float = 0.0  # share of the training wall time spent waiting for batches
    stopped_early: bool = False
    resumed_from_step: int = 0
    world_size: int = 1


def _train_split(data: Any) -> ImageSet | DataSource:
    """The fast path's train ImageSet, or the DataSource of a DataLoader / iterable of batches."""
    if isinstance(data, Dataset):
        return data.train
    if isinstance(data, ImageSet):
        return data
    src = as_source(data)
    if src is None:
        raise BadInput("no training data")
    return src.dataset.train if src.dataset is not None else src


# --------------------------------------------------------------------------- distributed


class _Dist:
    """Rank, world size and the few collectives fine-tuning needs (no-ops in one process)."""

    def __init__(self, cfg: RecoverConfig, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        self.rank, self.world = 0, 1
        self.device = device  # where collective tensors must live (NCCL reduces CUDA tensors only)
        if cfg.distributed not in ("auto", "off"):
            raise BadInput(f"distributed must be 'auto' or 'off', not {cfg.distributed!r}")
        if cfg.backend not in ("auto", "gloo", "nccl", "mpi"):
            raise BadInput(f"backend must be 'auto', 'gloo', 'nccl' or 'mpi', not {cfg.backend!r}")
        if cfg.distributed == "off" or not dist.is_available():
            return
        if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
            dist.init_process_group(backend=backend)  # env:// from torchrun
            self.owned = True
        if dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return value
        v = value.detach().clone()
        self.dist.all_reduce(v)
        return v / self.world

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return value
        v = value.to(self.device, copy=True)
        self.dist.all_reduce(v)
        return v.cpu()

    def sync_bn(self, model: nn.Module) -> None:
        """Average the BN running statistics over ranks (each rank updated them on its own shard)."""
        if not self.active:
            return
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
                for buf in (m.running_mean, m.running_var):
                    v = buf.detach().clone()
                    self.dist.all_reduce(v)
                    buf.copy_(v / self.world)

    def barrier(self) -> None:
        if self.active:
            self.dist.barrier()

    def close(self) -> None:
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()


# --------------------------------------------------------------------------- the loop


def recover(model: nn.Module, data: Any, teacher: nn.Module | None = None,
            config: RecoverConfig | None = None, ui: UI = QUIET, loss_fn: LossFn | None = None,
            eval_fn: EvalFn | None = None, **overrides: Any) -> RecoverResult:
    """Fine-tune ``model`` in place on ``data`` (its train split), distilling from ``teacher`` if given.

    ``data`` is an edgeprune ``Dataset``/``ImageSet`` (the fast numpy path with crop + flip), or
    anything :func:`edgeprune.data.as_source` takes: a DataLoader or re-iterable of (inputs, targets)
    batches (used as it yields them: augmentation is the loader's job), a (train, val) pair.
    ``loss_fn(outputs, targets) -> scalar`` replaces cross-entropy; with it, KD distils every output
    tensor of the teacher with MSE (a custom loss means the outputs need not be logits).
    ``eval_fn(model, val_batches) -> float`` (higher is better) replaces top-1 for early stop.
    ``overrides`` replace fields of ``config`` (``recover(m, d, epochs=3, lr=0.01)``).
    Under ``torchrun`` (``WORLD_SIZE`` > 1) the data is sharded over the ranks
    and gradients are averaged with DistributedDataParallel; every rank ends
    with the same weights.
    """
    cfg = config or RecoverConfig()
    if overrides:
        unknown = set(overrides) - set(RecoverConfig.__dataclass_fields__)
        if unknown:
            raise BadInput(f"unknown recover option(s): {', '.join(sorted(unknown))}")
        cfg = replace(cfg, **overrides)
    if cfg.memory_format not in MEMORY_FORMATS:
        raise BadInput(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, not {cfg.memory_format!r}")
    if cfg.epochs < 0 or cfg.batch_size < 1 or cfg.lr <= 0 or not 0 <= cfg.kd_alpha <= 1 or cfg.temperature <= 0:
        raise BadInput(f"bad recover config: {cfg}")
    train = _train_split(data)
    if isinstance(train, ImageSet) and len(train) == 0:
        raise BadInput("no training images")
    device = resolve_device(cfg.device, model)
    dist = _Dist(cfg, device)
    homes = [(m, _device_of(m)) for m in (model, teacher) if m is not None]
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and threads > 1 and cfg.epochs > 0:
        _fewer_threads_when_busy(threads, ui if dist.rank == 0 else QUIET)
    nhwc = _channels_last(cfg.memory_format, model)
    try:
        for m, _ in homes:
            m.to(device, memory_format=torch.channels_last) if nhwc else m.to(device)
        return _recover(model, train, teacher, cfg, ui if dist.rank == 0 else QUIET, dist, loss_fn, eval_fn, nhwc)
    finally:
        for m, home in homes:
            m.to(home, memory_format=torch.contiguous_format) if nhwc else m.to(home)
        torch.set_num_threads(threads)
        dist.close()


MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def _channels_last(memory_format: str, model: nn.Module) -> bool:
    """Whether to train in channels_last: asked for, or "auto" and the model has a 2-D convolution."""
    if memory_format != "auto":
        return memory_format == "channels_last"
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _probe_input(train: ImageSet | DataSource) -> Any:
    """Two training images (or the first training batch) to try the model on."""
    if isinstance(train, DataSource):
        got = train.score_batches(1, 2)
        return got[0][0] if got else None
    return Normaliser(train.mean, train.std)(train.images[:2])


def _channels_last_runs(models: list[nn.Module], train: ImageSet | DataSource, device: torch.device, ui: UI) -> bool:
    """Whether ``models`` (already in channels_last) run a forward pass; if not, they are put back contiguous.

    A model that flattens a feature map with ``.view`` (not ``.reshape``) fails in NHWC; it trains contiguous.
    The probe runs in eval mode without gradients, so it changes no weights and no BN statistics.
    """
    x = _probe_input(train)
    if x is None:
        return True
    try:
        with torch.no_grad():
            for m in models:
                was = m.training
                m.eval()
                try:
                    call_model(m, _nhwc(to_device(x, device)))
                finally:
                    m.train(was)
    except RuntimeError as err:
        for m in models:
            m.to(memory_format=torch.contiguous_format)
        ui.log(f"training in contiguous memory: the model does not run in channels_last ({str(err).splitlines()[0][:90]})")
        return False
    return True


def _nhwc(inputs: Any) -> Any:
    """4-D input tensors in channels_last (others as they are)."""
    return map_inputs(inputs, lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


def _fewer_threads_when_busy(threads: int, ui: UI) -> None:
    """Fine-tune on the free cores only when other processes keep some busy (RecoverConfig.threads unset)."""
    from edgeprune.environment import free_threads, usable_cores

    n, busy = free_threads(threads)
    if n < threads:
        ui.log(f"other processes keep ~{busy:.1f} of {usable_cores()} cores busy: fine-tuning on {n} torch thread(s), "
               f"not {threads} (more threads than free cores run many times slower; RecoverConfig.threads overrides)")
        torch.set_num_threads(n)


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def resolve_device(spec: str | None, model: nn.Module) -> torch.device:
    """The device fine-tuning runs on: ``spec`` ("cpu", "cuda", "cuda:1"), or the model's own if None.

    Under torchrun a plain "cuda" is the rank's ``LOCAL_RANK`` GPU. Asking
    for CUDA where torch has none is a clear error, not a silent CPU run.
    """
    if spec is None:
        return _device_of(model)
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise BadInput(f"bad device {spec!r}: {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"device {spec!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.index >= torch.cuda.device_count():
            raise BadInput(f"device {str(dev)!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    elif dev.type != "cpu":
        raise BadInput(f"device {spec!r} is not supported for fine-tuning (cpu or cuda)")
    return dev


def _recover(model: nn.Module, train: ImageSet | DataSource, teacher: nn.Module | None, cfg: RecoverConfig, ui: UI,
             dist: _Dist, loss_fn: LossFn | None = None, eval_fn: EvalFn | None = None, nhwc: bool = False) -> RecoverResult:
    if nhwc:
        nhwc = _channels_last_runs([m for m in (model, teacher) if m is not None], train, dist.device, ui)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    val: ImageSet | DataSource | None = None
    loader: BatchLoader | IterableLoader
    if isinstance(train, DataSource):  # a DataLoader / iterable of batches: used as it yields them
        if cfg.val_fraction > 0:
            if train.same_split:
                raise BadInput("val_fraction with a single DataLoader: pass a (train, val) pair for early stop")
            val = train
        loader = IterableLoader(train.train, cfg.max_images, rng, rank=dist.rank, world=dist.world, ui=ui)
        batch, per_epoch = loader.batch_size, loader.per_epoch
        n_total = per_epoch
    else:
        if cfg.val_fraction > 0:
            perm = rng.permutation(len(train))
            n_val = max(1, int(len(train) * cfg.val_fraction))
            val, train = train.subset(np.sort(perm[:n_val])), train.subset(np.sort(perm[n_val:]))
        n_total = len(train)
        per_epoch = min(n_total, cfg.max_images or n_total)
        batch = min(cfg.batch_size, per_epoch)
        if batch < dist.world:
            raise BadInput(f"batch size {batch} is smaller than the number of processes ({dist.world})")
        loader = BatchLoader(train.images, train.labels, train.mean, train.std, batch, per_epoch, rng,
                             augment=cfg.augment, rank=dist.rank, world=dist.world, prefetch=cfg.prefetch)
    steps_per_epoch = loader.steps
    total_steps = max(1, round(cfg.epochs * steps_per_epoch)) if cfg.epochs > 0 else 0

    net: nn.Module = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)  # broadcasts rank 0's weights and buffers: every rank starts equal
    fingerprint = _fingerprint(model, cfg, n_total)
    if cfg.bn_recalibrate and total_steps > 0:
        recalibrate_bn(model, train, batch_size=min(256, n_total), batches=cfg.bn_batches, seed=cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    ts = max(total_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, ts) / ts)))
    state = _resume(cfg, fingerprint, model, opt, sched, loader, ui, dist)
    step = start_step = state.get("step", 0)
    history: list[dict[str, float]] = state.get("history", [])
    best, best_state, bad_epochs = state.get("best", -1.0), None, state.get("bad_epochs", 0)
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    use_kd = teacher is not None and cfg.kd_alpha > 0
    metric = eval_fn.__name__ if eval_fn is not None else "top-1"
    stopped = False
    seen, wait_s, t0 = 0, 0.0, time.perf_counter()
    epoch_loss, epoch_n, epoch_t0 = 0.0, 0, time.perf_counter()
    ui.log(f"fine-tuning {total_steps} steps ({cfg.epochs:g} epoch(s) of {per_epoch} images, batch {batch}"
           f"{f', {dist.world} processes' if dist.active else ''}"
           f"{(', KD (MSE on outputs)' if loss_fn is not None else ', KD') if use_kd else ''}, lr {cfg.lr:g})"
           + (f", resumed at step {start_step}" if start_step else ""))
    with ui.progress("fine-tune", total=total_steps) as bar:
        bar.advance(start_step)
        while step < total_steps and not stopped:
            skip = step % steps_per_epoch
            it = loader.epoch(skip=skip)
            while step < total_steps:
                tw = time.perf_counter()
                try:
                    x, y = next(it)
                except StopIteration:
                    break
                wait_s += time.perf_counter() - tw
                x, y = to_device(x, dist.device), to_device(y, dist.device)
                if nhwc:
                    x = _nhwc(x)
                net.train()
                logits = call_model(net, x)
                loss = F.cross_entropy(logits, y) if loss_fn is None else _user_loss(loss_fn, logits, y)
                if use_kd:
                    with torch.no_grad():
                        t_logits = call_model(teacher, x)
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * _distil(logits, t_logits, cfg.temperature, loss_fn is not None)
                if cfg.bn_l1 > 0:
                    loss = loss + cfg.bn_l1 * sum(m.weight.abs().sum() for m in model.modules()
                                                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                g_loss = float(dist.mean(loss.detach()))  # the same value on every rank: they stop together
                if not math.isfinite(g_loss):
                    from edgeprune.errors import EdgepruneError

                    raise EdgepruneError(f"fine-tuning diverged at step {step} (loss {g_loss}); lower the learning rate")
                opt.step()
                sched.step()
                step += 1
                seen += batch_len(x) * dist.world
                epoch_loss += g_loss
                epoch_n += 1
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.advance(1, info=f"ep {step / steps_per_epoch:.2f} loss {g_loss:.3f} {rate:.0f} img/s")
                if step % steps_per_epoch == 0 or step == total_steps:
                    dist.sync_bn(model)
                    now = time.perf_counter()
                    entry = {"step": step, "epoch": step / steps_per_epoch, "loss": epoch_loss / max(epoch_n, 1),
                             "lr": float(sched.get_last_lr()[0]), "images_per_s": epoch_n * batch / max(now - epoch_t0, 1e-9),
                             "seconds": now - epoch_t0}
                    if val is not None:
                        entry["val_top1"] = _evaluate(model, val, dist, eval_fn=eval_fn)
                        if entry["val_top1"] > best:
                            best, bad_epochs = entry["val_top1"], 0
                            if cfg.restore_best:
                                best_state = copy.deepcopy(model.state_dict())
                        else:
                            bad_epochs += 1
                    history.append(entry)
                    ui.log(f"  epoch {entry['epoch']:.2f}: loss {entry['loss']:.3f}"
                           + (f", val {metric} {entry['val_top1']:.4g}" if val is not None else "")
                           + f", {entry['images_per_s']:.0f} img/s")
                    epoch_loss, epoch_n, epoch_t0 = 0.0, 0, time.perf_counter()
                    _checkpoint(cfg, dist, fingerprint, model, opt, sched, loader, step, history, best, bad_epochs)
                    if val is not None and cfg.patience is not None and bad_epochs > cfg.patience:
                        ui.log(f"early stop at epoch {entry['epoch']:.2f}: no better validation {metric} for "
                               f"{bad_epochs} epoch(s) (best {best:.4g})")
                        stopped = True
                        break
            it.close()
    if best_state is not None and val is not None and history and history[-1].get("val_top1", best) < best:
        model.load_state_dict(best_state)
        ui.log(f"restored the best epoch's weights (val {metric} {best:.4g})")
    if cfg.bn_final and total_steps > 0:
        recalibrate_bn(model, train, batch_size=min(256, n_total), batches=cfg.bn_batches, seed=cfg.seed + 1)
    model.eval()
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return RecoverResult(model, step / steps_per_epoch, seen / elapsed, history,
                         data_wait_fraction=wait_s / elapsed if seen else 0.0, stopped_early=stopped,
                         resumed_from_step=start_step, world_size=dist.world)


def _user_loss(loss_fn: LossFn, outputs: Any, targets: Any) -> torch.Tensor:
    loss = loss_fn(outputs, targets)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise BadInput(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
    return loss


def _distil(student: Any, teacher: Any, temperature: float, custom_loss: bool) -> torch.Tensor:
    """The KD term: soft-target KL on logits (scaled by T^2); with a custom loss, MSE on every output tensor."""
    if not custom_loss and isinstance(student, torch.Tensor):
        T = temperature
        return F.kl_div(F.log_softmax(student / T, 1), F.softmax(teacher / T, 1), reduction="batchmean") * T * T
    pairs = list(zip(output_tensors(student), output_tensors(teacher)))
    terms = [F.mse_loss(s.float(), t.float()) for s, t in pairs if s.is_floating_point()]
    return torch.stack(terms).mean() if terms else torch.zeros((), device=pairs[0][0].device if pairs else None)


@torch.no_grad()
def _evaluate(model: nn.Module, data: ImageSet | DataSource, dist: _Dist, batch_size: int = 500,
              eval_fn: EvalFn | None = None) -> float:
    """Top-1 (%) (or ``eval_fn``) on ``data``; on the fast path each rank scores its share, summed over ranks."""
    model.eval()
    if isinstance(data, DataSource):
        from edgeprune.metrics import evaluate

        return evaluate(model, data, eval_fn=eval_fn, device=dist.device)
    norm = Normaliser(data.mean, data.std)
    idx = np.arange(len(data))[dist.rank :: dist.world]
    correct = 0
    for i in range(0, len(idx), batch_size):
        j = idx[i : i + batch_size]
        pred = model(norm(data.images[j]).to(dist.device)).argmax(1).cpu()
        correct += int((pred == torch.as_tensor(data.labels[j])).sum())
    tot = dist.sum(torch.tensor([correct, len(idx)], dtype=torch.float64))
    return float(100.0 * tot[0] / max(float(tot[1]), 1.0))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageSet | DataSource, batch_size: int = 256, batches: int = 20, seed: int = 0) -> None:
    """Re-estimate BN running statistics (cumulative average) on random train images, weights untouched.

    After channels are removed the downstream BN statistics no longer match the
    activations; re-estimating them is a cheap first step before fine-tuning.
    Every rank draws the same images, so distributed runs stay equal. Runs on
    the device the model is on. A :class:`DataSource` of batches gives its first
    ``batches`` training batches (``batch_size`` is then the loader's).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = _device_of(model)
    try:
        if isinstance(data, DataSource):
            for x, _y in data.score_batches(batches, batch_size):
                call_model(model, to_device(x, device))
            return
        norm = Normaliser(data.mean, data.std)
        rng = np.random.default_rng(seed + 1)
        n = min(len(data), batch_size * batches)
        pick = np.sort(rng.permutation(len(data))[:n])
        for i in range(0, n, batch_size):
            model(norm(data.images[pick[i : i + batch_size]]).to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)


# --------------------------------------------------------------------------- checkpoints


def _fingerprint(model: nn.Module, cfg: RecoverConfig, n_train: int) -> str:
    """What a checkpoint must match to be resumed: the starting weights, the data size and the recipe."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    # how it runs, not what it computes: a checkpoint resumes across these
    runtime = ("checkpoint_dir", "resume", "distributed", "backend", "prefetch", "patience", "threads", "device", "memory_format")
    keep = {k: v for k, v in asdict(cfg).items() if k not in runtime}
    h.update(repr(sorted(keep.items())).encode())
    h.update(str(n_train).encode())
    return h.hexdigest()


def _checkpoint(cfg: RecoverConfig, dist: _Dist, fingerprint: str, model: nn.Module, opt: Any, sched: Any,
                loader: BatchLoader | IterableLoader, step: int, history: list, best: float, bad_epochs: int) -> None:
    if not cfg.checkpoint_dir:
        return
    if dist.rank == 0:
        from edgeprune.fileio import atomic_path

        path = Path(cfg.checkpoint_dir) / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "rng": _rng_to_tensors(loader.rng_state()), "step": step,
                        "history": history, "best": best, "bad_epochs": bad_epochs}, tmp)
    dist.barrier()


def _read_checkpoint(cfg: RecoverConfig, fingerprint: str, ui: UI) -> dict | None:
    """The checkpoint in ``cfg.checkpoint_dir`` if there is one for this model, data and recipe, else None."""
    if not cfg.checkpoint_dir or not cfg.resume:
        return None
    path = Path(cfg.checkpoint_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        # our own checkpoint of tensors, numbers and strings: weights_only is enough and runs no code
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file: start afresh, said in the log
        ui.log(f"[yellow]ignoring unreadable checkpoint {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}[/yellow]")
        return None
    if ck.get("fingerprint") != fingerprint:
        ui.log(f"[yellow]checkpoint {path} is from another model, data or recipe: starting afresh[/yellow]")
        return None
    return ck


def _rng_to_tensors(state: dict) -> dict:
    # numpy PCG64 state holds 128-bit ints: store them as strings (weights_only-safe)
    return {"bit_generator": state["bit_generator"], "state": {k: str(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def _rng_from_tensors(d: dict) -> dict:
    return {"bit_generator": d["bit_generator"], "state": {k: int(v) for k, v in d["state"].items()},
            "has_uint32": int(d["has_uint32"]), "uinteger": int(d["uinteger"])}


def _resume(cfg: RecoverConfig, fingerprint: str, model: nn.Module, opt: Any, sched: Any,
            loader: BatchLoader | IterableLoader, ui: UI, dist: _Dist | None = None) -> dict:
    """Load the checkpoint in ``cfg.checkpoint_dir`` when it matches; under DDP rank 0 reads it (the others may be
    on machines that cannot see it) and sends it to every rank, so all resume at the same step."""
    ck = _read_checkpoint(cfg, fingerprint, ui) if dist is None or dist.rank == 0 else None
    if dist is not None and dist.active:
        box = [ck]
        dist.dist.broadcast_object_list(box, src=0)
        ck = box[0]
    if ck is None:
        return {}
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    loader.set_rng_state(_rng_from_tensors(ck["rng"]))
    return {"step": int(ck["step"]), "history": list(ck["history"]), "best": float(ck["best"]), "bad_epochs": int(ck["bad_epochs"])}
