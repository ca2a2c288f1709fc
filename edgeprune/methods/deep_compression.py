"""Deep compression: magnitude pruning, k-means weight sharing, Huffman coding, in a real file format.

Paper: Han, Mao & Dally 2016, *Deep Compression: Compressing Deep Neural
Networks with Pruning, Trained Quantization and Huffman Coding* (ICLR), built
on Han et al. 2015, *Learning both Weights and Connections for Efficient
Neural Networks* (NeurIPS).

When to use it: the limit is **stored size** (flash, over-the-air updates,
download size), not latency. Unstructured sparsity and shared weights make
the file 10-50x smaller, but a dense engine (ONNX Runtime, TensorRT, TVM,
VTA) decodes it back to dense fp32/int8 tensors and runs exactly as fast as
before: it changes stored bytes, not latency, unless the target has a
sparse kernel. For latency, prune channels (``edgeprune compress``).

The three stages, as in the paper:

1. prune: zero the smallest weights (per layer, one global threshold, or
   the paper's per-layer ``q * std(layer)`` threshold, ``scope="std"``), then
   retrain with the mask fixed;
2. share: per layer, 1-D k-means over the kept weights with ``2**bits``
   centroids, linearly initialised between the min and max weight (the
   paper's best initialisation); retrain the centroids (each centroid moves
   by the sum of its weights' gradients; assignments stay fixed);
3. code: Huffman-code the centroid indices and the gaps between kept
   positions (gaps above ``2**gap_bits - 2`` use an escape symbol, the
   exact equivalent of the paper's filler zeros).

File format (``.epdc``, one file; docs/methods.md)::

    b"EPDC" | u8 version (1) | u32 little-endian header length | header (zlib-deflated JSON, UTF-8) | body

The header lists, per conv/linear weight, its shape, kept count, codebook and
stream sections (offset, length into the body), bit counts and gap width;
and the remaining state-dict tensors (BN, biases, buffers) as raw
little-endian arrays, zlib-deflated. The body holds per layer: the float32
codebook, the index code lengths (u8 per symbol: a canonical Huffman table),
the index bitstream, the gap code lengths and the gap bitstream. Loading
rebuilds every tensor bit for bit (a pruned weight is stored as +0.0).
A layer whose kept weights take more than 256 distinct values (not shared)
is stored with its kept values raw (float32) and only its positions coded.
"""
from __future__ import annotations

import copy
import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import BadInput, BudgetMissed
from edgeprune.methods import huffman
from edgeprune.methods._train import (
    UNSTRUCTURED_NOTE,
    apply_masks,
    sgd_loop,
    sparsity_of,
    test_split,
    weight_layers,
)
from edgeprune.ui import QUIET, UI

MAGIC = b"EPDC"
VERSION = 1
FORMAT = "edgeprune-deep-compression"
MAX_SHARED = 256


# --------------------------------------------------------------------------- stage 1: pruning


def magnitude_masks(model: nn.Module, sparsity: float | Mapping[str, float], scope: str = "std",
                    layers: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (bool) of the conv/linear weights: the smallest ``sparsity`` of weights are dropped.

    ``scope``: ``"layer"`` (each layer loses ``sparsity`` of its weights; a dict gives
    per-layer sparsities), ``"global"`` (one threshold on |w| over all layers) or
    ``"std"`` (Han et al.: per-layer threshold ``q * std(layer weights)``, with the
    one ``q`` that reaches ``sparsity`` overall).
    """
    layers = dict(layers) if layers is not None else weight_layers(model)
    if scope not in ("layer", "global", "std"):
        raise BadInput(f"unknown pruning scope {scope!r} (layer, global or std)")
    if isinstance(sparsity, Mapping):
        scope = "layer"
    masks: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for name, m in layers.items():
            s = float(sparsity.get(name, 0.0)) if isinstance(sparsity, Mapping) else float(sparsity)
            _check_sparsity(s)
            w = m.weight.detach().abs().flatten()
            k = round(s * w.numel())
            mask = torch.ones(w.numel(), dtype=torch.bool)
            if k > 0:
                mask[torch.argsort(w, stable=True)[:k]] = False
            masks[name] = mask.view_as(m.weight)
        return masks
    s = float(sparsity)
    _check_sparsity(s)
    scores = []
    for m in layers.values():
        w = m.weight.detach().abs().flatten().double()
        if scope == "std":
            w = w / max(float(m.weight.detach().double().std()), 1e-12)
        scores.append(w)
    allv = torch.cat(scores)
    k = round(s * allv.numel())
    order = torch.argsort(allv, stable=True)
    keep = torch.ones(allv.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    i = 0
    for name, m in layers.items():
        n = m.weight.numel()
        masks[name] = keep[i : i + n].view_as(m.weight).clone()
        i += n
    return masks


def _check_sparsity(s: float) -> None:
    if not 0.0 <= s < 1.0:
        raise BadInput(f"sparsity must be in [0, 1), got {s}")


def magnitude_prune(model: nn.Module, sparsity: float | Mapping[str, float], scope: str = "std") -> dict[str, torch.Tensor]:
    """Zero the smallest weights in place (see :func:`magnitude_masks`) and return the masks."""
    masks = magnitude_masks(model, sparsity, scope)
    apply_masks(model, masks)
    return masks


def retrain_masked(model: nn.Module, data: Any, masks: Mapping[str, torch.Tensor], steps: int, **loop: Any) -> None:
    """Retrain with the masks fixed: masked gradients are zeroed and the mask re-applied after each step."""
    mods = dict(model.named_modules())

    def before(_: int) -> None:
        for name, mask in masks.items():
            g = mods[name].weight.grad
            if g is not None:
                g.mul_(mask.to(g.dtype))

    sgd_loop(model, data, steps, before_step=before, after_step=lambda _: apply_masks(model, dict(masks)), **loop)


# --------------------------------------------------------------------------- stage 2: weight sharing


@dataclass
class SharedLayer:
    """One layer's codebook (float32) and the centroid index of each kept weight (flat order)."""

    codebook: np.ndarray
    indices: np.ndarray
    mask: torch.Tensor

    def weight(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The dense weight: ``codebook[index]`` at kept positions, 0 elsewhere."""
        flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
        flat[self.mask.flatten().numpy()] = self.codebook[self.indices]
        return torch.from_numpy(flat.reshape(shape))


def kmeans_1d(values: np.ndarray, k: int, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars with linear initialisation (Han et al.): (centroids, assignment)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    lo, hi = float(values.min()), float(values.max())
    k = max(1, min(k, len(np.unique(values))))
    cent = np.linspace(lo, hi, k) if k > 1 else np.array([values.mean()])
    assign = np.zeros(len(values), dtype=np.int64)
    for it in range(iters):
        order = np.argsort(cent)
        cent = cent[order]
        mids = (cent[1:] + cent[:-1]) / 2
        new = np.searchsorted(mids, values)
        if it > 0 and np.array_equal(new, assign):
            break
        assign = new
        sums = np.bincount(assign, weights=values, minlength=k)
        cnt = np.bincount(assign, minlength=k)
        cent = np.where(cnt > 0, sums / np.maximum(cnt, 1), cent)
    cent32 = cent.astype(np.float32)
    # drop unused centroids so the index alphabet is as small as it can be
    used = np.unique(assign)
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return cent32[used], remap[assign]


def share_weights(model: nn.Module, masks: Mapping[str, torch.Tensor], bits: int | Mapping[str, int] = 5,
                  iters: int = 30) -> dict[str, SharedLayer]:
    """k-means each layer's kept weights into ``2**bits`` centroids and write the shared values back in place."""
    mods = dict(model.named_modules())
    out: dict[str, SharedLayer] = {}
    for name, mask in masks.items():
        b = int(bits.get(name, 8) if isinstance(bits, Mapping) else bits)
        if not 1 <= b <= 8:
            raise BadInput(f"weight-sharing bits must be 1..8, got {b} for {name}")
        w = mods[name].weight
        vals = w.detach().flatten()[mask.flatten()].numpy()
        cent, idx = kmeans_1d(vals, 2**b, iters)
        layer = SharedLayer(cent, idx, mask.clone())
        with torch.no_grad():
            w.copy_(layer.weight(tuple(w.shape)))
        out[name] = layer
    return out


def retrain_centroids(model: nn.Module, data: Any, shared: Mapping[str, SharedLayer], steps: int, lr: float = 0.01,
                      centroid_lr: float | None = None, **loop: Any) -> None:
    """Han et al.'s trained quantisation: each centroid moves by the summed gradient of its weights.

    The other parameters (BN, biases) train with SGD; assignments stay fixed, so
    the stored index streams (and the file size) do not change.
    """
    mods = dict(model.named_modules())
    clr = lr if centroid_lr is None else centroid_lr
    shared_params = {id(mods[n].weight) for n in shared}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in shared_params]
    grads: dict[str, np.ndarray] = {}

    def before(_: int) -> None:
        for name, layer in shared.items():
            w = mods[name].weight
            if w.grad is None:
                continue
            g = w.grad.detach().flatten()[layer.mask.flatten()].double().numpy()
            grads[name] = np.bincount(layer.indices, weights=g, minlength=len(layer.codebook))
            w.grad = None

    def after(step: int) -> None:
        scale = 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
        for name, layer in shared.items():
            if name in grads:
                layer.codebook = (layer.codebook - clr * scale * grads[name]).astype(np.float32)
            w = mods[name].weight
            with torch.no_grad():
                w.copy_(layer.weight(tuple(w.shape)))

    if not others:
        others = [nn.Parameter(torch.zeros(1))]  # nothing else trains: a dummy keeps the optimiser happy
    sgd_loop(model, data, steps, lr=lr, params=others, before_step=before, after_step=after, **loop)


# --------------------------------------------------------------------------- stage 3: the file


def _layer_streams(w: torch.Tensor, gap_bits: int) -> dict[str, Any]:
    flat = w.detach().contiguous().flatten().numpy().astype(np.float32, copy=False)
    pos = np.flatnonzero(flat != 0)
    kept = flat[pos]
    uniq, inv = np.unique(kept, return_inverse=True)
    rec: dict[str, Any] = {"n": int(flat.size), "kept": len(pos), "gap_bits": gap_bits}
    sections: dict[str, bytes] = {}
    if len(uniq) <= MAX_SHARED:
        rec["kind"] = "shared"
        sections["codebook"] = uniq.astype("<f4").tobytes()
        lens = huffman.code_lengths(np.bincount(inv, minlength=len(uniq)))
        sections["index_table"] = lens.astype(np.uint8).tobytes()
        sections["index_bits"], rec["index_nbits"] = huffman.encode(inv, lens)
        rec["alphabet"] = len(uniq)
    else:
        rec["kind"] = "raw-values"
        sections["values"] = kept.astype("<f4").tobytes()
    if len(pos) < flat.size:
        esc = (1 << gap_bits) - 1
        gaps = np.diff(np.concatenate([[-1], pos])) - 1
        # a gap of q*esc + r is q escape symbols (skip esc positions) then r (skip r, then a kept weight)
        counts = gaps // esc + 1
        seq = np.full(int(counts.sum()), esc, dtype=np.int64)
        seq[np.cumsum(counts) - 1] = gaps % esc
        lens = huffman.code_lengths(np.bincount(seq, minlength=esc + 1))
        sections["gap_table"] = lens.astype(np.uint8).tobytes()
        sections["gap_bits"], rec["gap_nbits"] = huffman.encode(seq, lens)
        rec["gap_symbols"] = len(seq)
    return {"rec": rec, "sections": sections}


def _decode_layer(rec: Mapping[str, Any], sec: Mapping[str, bytes]) -> np.ndarray:
    n, kept = int(rec["n"]), int(rec["kept"])
    flat = np.zeros(n, dtype=np.float32)
    if kept == 0:
        return flat
    if "gap_table" in sec:
        esc = (1 << int(rec["gap_bits"])) - 1
        seq = huffman.decode(sec["gap_bits"], int(rec["gap_nbits"]), np.frombuffer(sec["gap_table"], np.uint8), int(rec["gap_symbols"]))
        adv = np.where(seq == esc, esc, seq + 1)
        pos = np.cumsum(adv) - 1
        pos = pos[seq != esc]
    else:
        pos = np.arange(n)
    if len(pos) != kept or (kept and (pos[-1] >= n)):
        raise BadInput("corrupt compressed file: kept positions do not match the header")
    if rec["kind"] == "shared":
        book = np.frombuffer(sec["codebook"], dtype="<f4")
        idx = huffman.decode(sec["index_bits"], int(rec["index_nbits"]), np.frombuffer(sec["index_table"], np.uint8), kept)
        flat[pos] = book[idx]
    else:
        flat[pos] = np.frombuffer(sec["values"], dtype="<f4")
    return flat


def compressed_layers(model: nn.Module) -> list[str]:
    """Names of the state-dict weights stored with pruning + sharing + Huffman (conv / linear weights)."""
    return [f"{n}.weight" if n else "weight" for n in weight_layers(model)]


def encode_model(model: nn.Module, gap_bits: int = 5, notes: list[str] | None = None) -> tuple[bytes, dict[str, int]]:
    """The ``.epdc`` bytes of ``model`` and a breakdown of where they go."""
    if not 2 <= gap_bits <= 12:
        raise BadInput(f"gap_bits must be 2..12, got {gap_bits}")
    state = model.state_dict()
    coded = set(compressed_layers(model))
    body = bytearray()
    layers, raws = [], []
    br = {"codebooks": 0, "index_bits": 0, "gap_bits": 0, "huffman_tables": 0, "raw_values": 0, "other_tensors": 0}

    def put(b: bytes) -> list[int]:
        off = len(body)
        body.extend(b)
        return [off, len(b)]

    for key, t in state.items():
        if key in coded and t.dtype == torch.float32:
            enc = _layer_streams(t, gap_bits)
            rec = {"name": key, "shape": list(t.shape), **enc["rec"], "sections": {}}
            for sname, b in enc["sections"].items():
                rec["sections"][sname] = put(b)
                cat = {"codebook": "codebooks", "index_bits": "index_bits", "gap_bits": "gap_bits", "values": "raw_values"}.get(sname, "huffman_tables")
                br[cat] += len(b)
            layers.append(rec)
        else:
            arr = t.detach().contiguous().cpu()
            np_arr = arr.numpy() if arr.dtype != torch.bfloat16 else arr.view(torch.int16).numpy()
            raw = np_arr.astype(np_arr.dtype.newbyteorder("<"), copy=False).tobytes()
            z = zlib.compress(raw, 9)
            raws.append({"name": key, "dtype": str(arr.dtype).removeprefix("torch."), "shape": list(arr.shape),
                         "section": put(z)})
            br["other_tensors"] += len(z)
    header = {"format": FORMAT, "version": VERSION, "layers": layers, "tensors": raws,
              "notes": list(notes or []) + [UNSTRUCTURED_NOTE]}
    hb = zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)
    out = MAGIC + struct.pack("<BI", VERSION, len(hb)) + hb + bytes(body)
    br["header"] = len(MAGIC) + 5 + len(hb)
    br["total"] = len(out)
    return out, br


def save_compressed(model: nn.Module, path: str | Path, gap_bits: int = 5, notes: list[str] | None = None) -> int:
    """Write ``model`` as one ``.epdc`` file (atomically) and return the bytes written.

    Any model saves: conv/linear weights are stored as kept positions + shared
    values (the values themselves when a layer has more than 256 distinct
    ones), everything else raw. Compress first (:func:`deep_compress`) to make it small.
    """
    from edgeprune.fileio import write_bytes

    data, _ = encode_model(model, gap_bits, notes)
    write_bytes(path, data)
    return len(data)


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The header (dict) and body of an ``.epdc`` file, with one-line errors for foreign or damaged files."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"compressed model not found: {path}") from None
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror or err}") from None
    if blob[:4] != MAGIC or len(blob) < 9:
        raise BadInput(f"{path} is not an edgeprune deep-compression file (bad magic)")
    version, hlen = struct.unpack("<BI", blob[4:9])
    if version != VERSION:
        raise BadInput(f"{path}: format version {version} is not supported (this edgeprune reads version {VERSION})")
    try:
        header = json.loads(zlib.decompress(blob[9 : 9 + hlen]).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput(f"{path}: corrupt header") from None
    return header, blob[9 + hlen :]


def load_compressed(path: str | Path, model_skeleton: nn.Module) -> nn.Module:
    """Load an ``.epdc`` file into ``model_skeleton`` (same architecture; modified in place and returned)."""
    header, body = read_header(path)
    state = model_skeleton.state_dict()
    new: dict[str, torch.Tensor] = {}

    def sec(span: list[int]) -> bytes:
        off, n = int(span[0]), int(span[1])
        if off + n > len(body):
            raise BadInput(f"{path}: truncated file")
        return body[off : off + n]

    for rec in header["layers"]:
        name = rec["name"]
        if name not in state:
            raise BadInput(f"{path}: tensor {name!r} is not in the model skeleton (another architecture?)")
        if list(state[name].shape) != list(rec["shape"]):
            raise BadInput(f"{path}: {name} has shape {rec['shape']} in the file but {list(state[name].shape)} in the model")
        flat = _decode_layer(rec, {k: sec(v) for k, v in rec["sections"].items()})
        new[name] = torch.from_numpy(flat.reshape(rec["shape"]).copy())
    for rec in header["tensors"]:
        name = rec["name"]
        if name not in state:
            raise BadInput(f"{path}: tensor {name!r} is not in the model skeleton (another architecture?)")
        dtype = getattr(torch, rec["dtype"])
        raw = zlib.decompress(sec(rec["section"]))
        if dtype == torch.bfloat16:
            t = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
        else:
            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
            t = torch.from_numpy(np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="), copy=True))
        new[name] = t.reshape(rec["shape"])
    missing = [k for k in state if k not in new]
    if missing:
        raise BadInput(f"{path}: the file has no tensor for {missing[0]} (and {len(missing) - 1} more)")
    model_skeleton.load_state_dict(new, strict=True)
    return model_skeleton.eval()


# --------------------------------------------------------------------------- the whole method


@dataclass
class DeepCompressResult:
    """What deep compression did: the shared, sparse model and its stored size."""

    model: nn.Module
    stored_bytes: int
    dense_bytes: int
    ratio: float
    sparsity: float
    bits: int
    target_bytes: float | None
    accuracy: dict[str, float] = field(default_factory=dict)  # dense / pruned / shared (top-1 %, test split)
    breakdown: dict[str, int] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly report (no model)."""
        return {"method": "deep-compression", "stored_bytes": self.stored_bytes, "dense_bytes": self.dense_bytes,
                "ratio": self.ratio, "sparsity": self.sparsity, "bits": self.bits, "target_bytes": self.target_bytes,
                "accuracy": self.accuracy, "breakdown": self.breakdown, "layers": self.layers, "path": self.path,
                "notes": self.notes, "latency_note": UNSTRUCTURED_NOTE}


def _pipeline_size(model: nn.Module, sparsity: float, bits: int, scope: str, gap_bits: int) -> int:
    m = copy.deepcopy(model)
    masks = magnitude_prune(m, sparsity, scope)
    share_weights(m, masks, bits, iters=10)
    return len(encode_model(m, gap_bits)[0])


def find_sparsity(model: nn.Module, target_bytes: float, bits: int, scope: str = "std", gap_bits: int = 5,
                  iterations: int = 12) -> tuple[float, int]:
    """The smallest sparsity whose pruned + shared + coded size fits ``target_bytes`` (bisection): (sparsity, bytes)."""
    lo_size = _pipeline_size(model, 0.0, bits, scope, gap_bits)
    if lo_size <= target_bytes:
        return 0.0, lo_size
    hi = 0.995
    hi_size = _pipeline_size(model, hi, bits, scope, gap_bits)
    if hi_size > target_bytes:
        raise BudgetMissed(f"deep compression cannot reach {target_bytes:,.0f} bytes at {bits}-bit sharing: "
                           f"the smallest file is {hi_size:,} bytes at 99.5% sparsity (BN/bias tensors and the header alone "
                           "are stored raw); allow more bytes or fewer bits")
    lo = 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        size = _pipeline_size(model, mid, bits, scope, gap_bits)
        if size <= target_bytes:
            hi, hi_size = mid, size
        else:
            lo = mid
    return hi, hi_size


def deep_compress(model: nn.Module, data: Any, target_bytes: float | None = None, ratio: float | None = None, *,
                  sparsity: float | None = None, bits: int = 5, scope: str = "std", gap_bits: int = 5,
                  prune_steps: int = 100, share_steps: int = 50, lr: float = 0.01, batch_size: int = 64,
                  max_images: int | None = None, eval_limit: int | None = None, margin: float = 0.97,
                  seed: int = 0, out: str | Path | None = None, ui: UI = QUIET) -> DeepCompressResult:
    """Prune, retrain, share, retrain centroids and Huffman-code ``model`` under a model-bytes budget.

    Give ``target_bytes`` (stored file size) or ``ratio`` (dense fp32 bytes / stored
    bytes); the sparsity is then searched so that the coded file fits (with
    ``margin`` of slack for retraining). ``sparsity`` fixes it instead. ``data`` is a
    :class:`~edgeprune.data.Dataset` (trains on train, reports top-1 on test,
    first ``eval_limit`` images) or None to skip retraining and accuracy.
    ``out``: write the ``.epdc`` file there. The input model is not modified.
    """
    from edgeprune.methods._train import top1
    from edgeprune.metrics import model_bytes

    if target_bytes is not None and ratio is not None:
        raise BadInput("give target_bytes or ratio, not both")
    if ratio is not None and ratio <= 1:
        raise BadInput(f"compression ratio must be > 1, got {ratio}")
    if target_bytes is not None and target_bytes <= 0:
        raise BadInput(f"target bytes must be positive, got {target_bytes}")
    model = copy.deepcopy(model).eval()
    dense = model_bytes(model)
    target = float(target_bytes) if target_bytes is not None else (dense / ratio if ratio else None)
    notes: list[str] = []
    acc: dict[str, float] = {}
    test = test_split(data) if data is not None else None
    if test is not None:
        acc["dense"] = top1(model, test, eval_limit)
    if sparsity is None:
        if target is None:
            sparsity = 0.9
            notes.append("no byte budget given: pruned 90% of weights (Han et al.'s conv-layer figure)")
        else:
            sparsity, est = find_sparsity(model, target * margin, bits, scope, gap_bits)
            ui.log(f"sparsity {sparsity:.3f} fits {target * margin:,.0f} bytes before retraining (estimate {est:,} bytes)")
    loop = {"lr": lr, "batch_size": batch_size, "max_images": max_images, "seed": seed}
    masks = magnitude_prune(model, sparsity, scope)
    if data is not None and prune_steps > 0:
        ui.log(f"retraining the pruned model ({prune_steps} steps, masks fixed)")
        retrain_masked(model, data, masks, prune_steps, **loop)
    if test is not None:
        acc["pruned"] = top1(model, test, eval_limit)
    shared = share_weights(model, masks, bits)
    blob, br = encode_model(model, gap_bits)
    # retraining moved the weights: if the coded file grew past the budget, prune a little more
    tries = 0
    while target is not None and len(blob) > target and tries < 20:
        sparsity = sparsity + (1 - sparsity) * 0.03
        masks = {n: m & k for (n, m), k in zip(masks.items(), magnitude_masks(model, sparsity, scope).values())}
        apply_masks(model, masks)
        shared = share_weights(model, masks, bits)
        blob, br = encode_model(model, gap_bits)
        tries += 1
    if target is not None and len(blob) > target:
        raise BudgetMissed(f"deep compression file is {len(blob):,} bytes, over the {target:,.0f}-byte budget")
    if test is not None:
        acc["shared"] = top1(model, test, eval_limit)
    if data is not None and share_steps > 0:
        ui.log(f"retraining the shared centroids ({share_steps} steps, assignments fixed)")
        retrain_centroids(model, data, shared, share_steps, **loop)
        blob, br = encode_model(model, gap_bits)
        if test is not None:
            acc["final"] = top1(model, test, eval_limit)
    path = None
    if out is not None:
        p = Path(out)
        if p.suffix != ".epdc":
            p = p / "model.epdc"
        from edgeprune.fileio import write_bytes

        write_bytes(p, blob)
        path = str(p)
    per_layer = []
    mods = dict(model.named_modules())
    for name, layer in shared.items():
        w = mods[name].weight
        per_layer.append({"layer": name, "weights": int(w.numel()), "kept": int(layer.mask.sum()),
                          "centroids": len(layer.codebook)})
    notes.append(UNSTRUCTURED_NOTE)
    return DeepCompressResult(model, len(blob), dense, dense / len(blob), sparsity_of(masks), bits, target, acc, br,
                              per_layer, path, notes)


__all__ = [
    "DeepCompressResult", "SharedLayer", "deep_compress", "encode_model", "find_sparsity", "kmeans_1d",
    "load_compressed", "magnitude_masks", "magnitude_prune", "read_header", "retrain_centroids", "retrain_masked",
    "save_compressed", "share_weights",
]
