"""The oracle: remove one channel at a time, measure the true loss change, and grade criteria against it.

Removing channel c of a group is done by zeroing what the channel owns: the
producers' output filters and biases, the BN scale and shift, the fixed
selection rows, and the consumers' input slices. For the loss this is exactly
the same model as the physically pruned one (``tests/test_importance.py``
checks it against :func:`edgeprune.prune.prune`), and it is much faster: the
model is not rebuilt, and with a torch.fx trace only the part of the network
after the group's first layer is recomputed (the activations before it are
cached per batch).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.graph import ChannelGraph, ChannelGroup


@dataclass
class OracleResult:
    """True loss change of removing each sampled channel alone (positive = the loss went up)."""

    channels: list[tuple[str, int]]
    delta: np.ndarray
    base_loss: float
    n_images: int
    batches: int
    batch_size: int
    seed: int
    seconds: float
    split: str = "test"
    #: (batches, channels): each held-out batch's summed loss change, for the oracle's own reliability
    per_batch: np.ndarray | None = None

    def reliability(self, seed: int = 0, splits: int = 32) -> float | None:
        """How reproducible the oracle is: Spearman-Brown-corrected split-half rank correlation.

        The batches are split at random into two halves; each half's loss changes
        rank the channels; the Spearman correlation ``r`` of the two rankings,
        averaged over ``splits`` random splits (one split alone varies by a few
        hundredths), is corrected to the full size, ``2r / (1 + r)``. A criterion
        cannot be expected to correlate with this oracle much above
        ``sqrt(reliability)``: beyond that the oracle's own sampling noise decides.
        None with fewer than 2 batches.
        """
        from scipy.stats import spearmanr

        if self.per_batch is None or len(self.per_batch) < 2:
            return None
        rng = np.random.default_rng(seed)
        half = len(self.per_batch) // 2
        rs = []
        for _ in range(splits if len(self.per_batch) > 2 else 1):
            order = rng.permutation(len(self.per_batch))
            a, b = self.per_batch[order[:half]].sum(0), self.per_batch[order[half:]].sum(0)
            rs.append(float(spearmanr(a, b).statistic))
        r = float(np.mean(rs))
        return 2 * r / (1 + r) if r > -1 else r

    def gather(self, scores: dict[str, torch.Tensor]) -> np.ndarray:
        """The scores of the sampled channels, in the oracle's order."""
        return np.array([float(scores[g][c]) for g, c in self.channels])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["channels"] = [[g, c] for g, c in self.channels]
        d["delta"] = [float(v) for v in self.delta]
        d.pop("per_batch", None)
        d["reliability"] = self.reliability()
        return d


@dataclass
class Grade:
    """How well one criterion ranks channels like the oracle."""

    criterion: str
    spearman: float
    spearman_abs: float
    topk_overlap: float
    bottomk_overlap: float
    k: int
    seconds: float
    needs_data: bool = False
    needs_grad: bool = False
    error: str = ""
    options: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- zeroing a channel


@contextmanager
def channel_removed(model: nn.Module, group: ChannelGroup, channel: int) -> Iterator[None]:
    """Temporarily zero everything channel ``channel`` of ``group`` owns (restored on exit)."""
    modules = dict(model.named_modules())
    saved: list[tuple[torch.Tensor, Any, torch.Tensor]] = []

    def zero(t: torch.Tensor | None, index: Any) -> None:
        if not isinstance(t, torch.Tensor):
            return
        saved.append((t, index, t.data[index].clone()))
        t.data[index] = 0

    c = int(channel)
    for mem in group.members:
        mod = modules.get(mem.layer)
        if mod is None:
            continue
        off = int(getattr(mem, "offset", 0) or 0)
        w = getattr(mod, "weight", None)
        b = getattr(mod, "bias", None)
        if mem.dim == "out":
            if isinstance(w, torch.Tensor) and w.dim() >= 1 and w.shape[0] == group.size:
                zero(w, (c,))
            if isinstance(b, torch.Tensor) and b.dim() == 1 and b.shape[0] == group.size:
                zero(b, (c,))
        elif mem.kind in ("conv2d", "select", "linear") and isinstance(w, torch.Tensor) and w.dim() >= 2:
            groups = getattr(mod, "groups", 1)
            if mem.kind == "conv2d" and groups > 1:
                if groups == mod.in_channels and w.shape[0] == group.size:  # depthwise: in == out channel
                    zero(w, (c,))
                    continue
                per = mod.in_channels // groups
                gi, ci = divmod(off + c, per)
                out_per = mod.out_channels // groups
                zero(w, (slice(gi * out_per, (gi + 1) * out_per), ci))
                continue
            cin = w.shape[1]
            if cin >= off + group.size and (cin == group.size or off or mem.kind != "linear" or cin % group.size):
                zero(w, (slice(None), off + c))
            elif cin % group.size == 0:  # linear after flatten: k inputs per channel
                k = cin // group.size
                zero(w, (slice(None), slice(c * k, (c + 1) * k)))
    try:
        yield
    finally:
        for t, index, value in reversed(saved):
            t.data[index] = value


# --------------------------------------------------------------------------- suffix re-execution


class _Suffix:
    """Runs a torch.fx trace of the model from a node on, with the activations before it cached."""

    def __init__(self, model: nn.Module) -> None:
        self.gm = torch.fx.symbolic_trace(model)
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.interp = torch.fx.Interpreter(self.gm)

    def start_of(self, layers: Sequence[str]) -> int:
        """Index of the first node that calls any of ``layers``."""
        targets = set(layers)
        for i, n in enumerate(self.nodes):
            if n.op == "call_module" and n.target in targets:
                return i
        return 0

    def live(self, start: int) -> list[torch.fx.Node]:
        """Values computed before ``start`` and used at or after it."""
        return [n for n in self.nodes[:start] if any(self.index[u] >= start for u in n.users)]

    def run(self, x: torch.Tensor, keep: dict[int, list[torch.fx.Node]]) -> tuple[Any, dict[int, dict[torch.fx.Node, Any]]]:
        """Full forward; returns the output and the live values for each start in ``keep``."""
        env: dict[torch.fx.Node, Any] = {}
        self.interp.env = env
        args = iter([x])
        self.interp.args_iter = args
        out = None
        for n in self.nodes:
            if n.op == "output":
                out = self.interp.run_node(n)
                break
            env[n] = self.interp.run_node(n)
        cached = {s: {n: env[n] for n in nodes} for s, nodes in keep.items()}
        return out, cached

    def run_from(self, start: int, cached: dict[torch.fx.Node, Any]) -> Any:
        """Forward from node ``start`` given the live values before it."""
        env = dict(cached)
        self.interp.env = env
        for n in self.nodes[start:]:
            if n.op == "output":
                return self.interp.run_node(n)
            env[n] = self.interp.run_node(n)
        raise RuntimeError("traced graph has no output node")


SPLITS = ("test", "train")


def _held_out(data: Any, batches: int, batch_size: int, seed: int, split: str = "test") -> list[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, list):
        return data[:batches] if batches else data
    from edgeprune.data import Dataset, ImageSet
    from edgeprune.errors import BadInput

    if split not in SPLITS:
        raise BadInput(f"unknown oracle split {split!r} (choose from: {', '.join(SPLITS)})")
    if isinstance(data, Dataset):
        data = data.train if split == "train" else data.test
    if not isinstance(data, ImageSet):
        raise TypeError(f"unsupported data for the oracle: {type(data).__name__}")
    n = min(len(data), batches * batch_size)
    if split == "train":
        from edgeprune.importance import score_order

        # the tail of the criteria's own order: disjoint from the images they score on
        idx = np.sort(score_order(len(data))[len(data) - n:])
    else:
        idx = np.sort(np.random.default_rng(seed + 1).permutation(len(data))[:n])
    return list(data.subset(idx).batches(batch_size))


def sample_channels(graph: ChannelGraph, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` channels drawn uniformly without replacement from every prunable group (all if n >= total)."""
    allc = [(g.id, c) for g in graph.prunable for c in range(g.size)]
    if n >= len(allc) or n <= 0:
        return allc
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(allc), size=n, replace=False))
    return [allc[i] for i in pick]


def oracle(model: nn.Module, data: Any, graph: ChannelGraph | None = None, n_channels: int = 64, batches: int = 8,
           seed: int = 0, batch_size: int = 128, progress: Callable[[int, int], None] | None = None,
           split: str = "test") -> OracleResult:
    """True loss change of removing each of ``n_channels`` sampled channels alone, on held-out batches.

    ``data``: a Dataset, an ImageSet, or a list of (x, y) batches. The loss is the
    mean cross-entropy over ``batches * batch_size`` held-out images. For a Dataset,
    ``split`` chooses them: ``test`` (the test split), or ``train`` (training images
    the criteria never score on: the loss fine-tuning minimises, and the one
    Taylor criteria estimate when the model sits near a minimum of it).
    """
    from edgeprune.graph import channel_groups

    t0 = time.perf_counter()
    model = model.eval()
    held = _held_out(data, batches, batch_size, seed, split)
    if graph is None:
        graph = channel_groups(model, held[0][0][:1])
    chans = sample_channels(graph, n_channels, seed)
    by_id = {g.id: g for g in graph.prunable}
    try:
        sfx: _Suffix | None = _Suffix(model)
    except Exception:  # noqa: BLE001 - untraceable models fall back to full forwards
        sfx = None
    starts = {gid: (sfx.start_of(by_id[gid].layers) if sfx else 0) for gid in by_id}
    keep = {s: sfx.live(s) for s in set(starts.values())} if sfx else {}
    n_img = sum(int(y.shape[0]) for _, y in held)
    base = 0.0
    removed = np.zeros(len(chans))
    per_batch = np.zeros((len(held), len(chans)))
    with torch.no_grad():
        for bi, (x, y) in enumerate(held):
            if sfx is not None:
                out, cached = sfx.run(x, keep)
            else:
                out, cached = model(x), {}
            base_b = float(nn.functional.cross_entropy(out, y, reduction="sum"))
            base += base_b
            for k, (gid, c) in enumerate(chans):
                with channel_removed(model, by_id[gid], c):
                    if sfx is not None:
                        s = starts[gid]
                        o = sfx.run_from(s, cached[s])
                    else:
                        o = model(x)
                lk = float(nn.functional.cross_entropy(o, y, reduction="sum"))
                removed[k] += lk
                per_batch[bi, k] = lk - base_b
                if progress:
                    progress(bi * len(chans) + k + 1, len(held) * len(chans))
    delta = (removed - base) / n_img
    return OracleResult(chans, delta, base / n_img, n_img, len(held), batch_size, seed, time.perf_counter() - t0, split, per_batch)


def grade(criteria: Sequence[str | tuple[str, str, dict[str, Any]]], model: nn.Module, data: Any, result: OracleResult,
          graph: ChannelGraph | None = None, batches: int = 8, batch_size: int = 64, seed: int = 0, k: int | None = None,
          on_done: Callable[[Grade], None] | None = None) -> list[Grade]:
    """Spearman correlation with the oracle, top/bottom-k overlap and wall time of each criterion.

    ``criteria``: names, or ``(label, name, options)`` triples. Scores come
    from the training split (``data.train`` for a Dataset); the oracle used
    held-out data. ``spearman`` compares with the signed loss change,
    ``spearman_abs`` with its magnitude (the quantity squared Taylor scores
    estimate). ``topk_overlap``: share of the oracle's k most important
    channels among the criterion's k highest; ``bottomk_overlap``: the same for
    the k least important (the ones a pruner removes).
    """
    from scipy.stats import spearmanr

    from edgeprune.graph import channel_groups, example_input
    from edgeprune.importance import importance, list_criteria

    flags = {name: (c.needs_data, c.needs_grad) for name, c, _ in list_criteria()}
    if graph is None:
        graph = channel_groups(model, example_input(model, data))
    truth = result.delta
    n = len(truth)
    k = k or max(1, n // 10)
    top_true = set(np.argsort(-truth, kind="stable")[:k])
    bot_true = set(np.argsort(truth, kind="stable")[:k])
    out = []
    for spec in criteria:
        label, name, opts = (spec, spec, {}) if isinstance(spec, str) else spec
        nd, ng = flags.get(name, (False, False))
        t0 = time.perf_counter()
        try:
            scores = importance(model, data, name, graph=graph, batches=batches, batch_size=batch_size, seed=seed, **opts)
        except Exception as err:  # noqa: BLE001 - one broken criterion must not hide the others' figures
            g = Grade(label, float("nan"), float("nan"), float("nan"), float("nan"), k, time.perf_counter() - t0, nd, ng,
                      f"{type(err).__name__}: {err}", opts)
            out.append(g)
            if on_done:
                on_done(g)
            continue
        secs = time.perf_counter() - t0
        est = result.gather(scores)
        rho = float(spearmanr(est, truth).statistic) if np.ptp(est) > 0 else float("nan")
        rho_abs = float(spearmanr(est, np.abs(truth)).statistic) if np.ptp(est) > 0 else float("nan")
        # ties broken at random (seeded) so a constant criterion scores like chance, not like the oracle's order
        jitter = np.random.default_rng(seed).random(n) * 1e-9 * (np.abs(est).max() + 1e-30)
        e = est + jitter
        top = len(top_true & set(np.argsort(-e, kind="stable")[:k])) / k
        bot = len(bot_true & set(np.argsort(e, kind="stable")[:k])) / k
        g = Grade(label, rho, rho_abs, top, bot, k, secs, nd, ng, "", opts)
        out.append(g)
        if on_done:
            on_done(g)
    return out


__all__ = ["Grade", "OracleResult", "channel_removed", "grade", "oracle", "sample_channels"]
