"""TensorRT without TensorRT: builder settings from a target file, and fused layer names back to layers.

Everything here is pure Python (``onnx`` at most, imported lazily), so it is
tested on every machine; :mod:`edgeprune.backends.trt.runtime` and
:mod:`edgeprune.backends.trt.emit` apply it to the real ``tensorrt`` objects.

Builder settings
----------------
:func:`build_spec` turns a ``trt`` target (``targets/*-trt.toml``) and a
precision into a :class:`TrtBuildSpec`: the ``trt.BuilderFlag`` names to set
and clear, the workspace pool limit in bytes, the DLA core, the timing-cache
file and the profiling verbosity. Keys read from the target's ``[options]``:

==============================  ========================================================
``precision``                   default build precision (``fp32``/``fp16``/``int8``);
                                must be one of the target's ``precisions``
``workspace_mib``               ``MemoryPoolType.WORKSPACE`` limit (default 1024)
``timing_cache``                timing-cache file (``~`` expanded; relative to the
                                current folder); default: beside the engine
``dla_core``                    run on this DLA core (Jetson AGX Orin / Orin NX);
                                absent = GPU. DLA runs fp16 and int8 only
``gpu_fallback``                let layers DLA cannot run fall back to the GPU (true)
``int8_fp16_fallback``          int8 engines also get ``FP16`` so layers left without
                                Q/DQ run in fp16 rather than fp32 (true when the
                                target lists fp16)
``tf32``                        keep TensorRT's default TF32 for fp32 convs (true);
                                false gives strict fp32
``builder_optimization_level``  0..5 (TensorRT >= 8.6), absent = TensorRT's default (3)
``layer_timing``                latency-table entries: ``profiler`` (the layer's
                                IProfiler time, default) or ``events`` (whole tiny engine)
==============================  ========================================================

int8 is explicit quantisation only: the ONNX carries QuantizeLinear /
DequantizeLinear pairs (from :func:`edgeprune.quant.ort_int8.quantize_onnx`)
and the builder gets the ``INT8`` flag; TensorRT wants them symmetric (zero
point 0, signed int8), which :func:`check_qdq_for_tensorrt` verifies before a
build. Implicit (calibrator) int8 is deprecated in TensorRT 10 and not used.

Layer names and time attribution
--------------------------------
TensorRT fuses ONNX nodes into one engine layer and names the result after
its parts: ``/layer1/layer1.0/conv1/Conv + /layer1/layer1.0/Relu``,
``PWN(/a/Add, /a/Relu_1)`` for fused point-wise ops, ``{ForeignNode[/a...b]}``
for a Myelin region spanning ONNX nodes ``/a`` through ``/b``, and
``Reformatting CopyNode for Input Tensor 0 to <layer>`` for layout
conversions it inserts. Built with ``ProfilingVerbosity.DETAILED`` (as edgeprune
always builds), the engine inspector's JSON also lists every layer's source
ONNX nodes exactly, in its ``Metadata`` field
(``[ONNX Layer: /a/Conv]\\x1f[ONNX Layer: /a/Relu]``). :func:`parse_engine_info`
reads that JSON (or, failing it, a plain list of layer names, parsed as above).

Time attribution (:meth:`LayerMap.attribute`), per engine layer and per run:

1. a layer whose sources include exactly one weighted node (Conv,
   ConvTranspose, Gemm, MatMul) gets **all** its time charged to that node's
   edgeprune layer: a conv with its fused BN, bias, ReLU and residual Add is
   what the latency tables key as one signature (``post="bn+add+relu"``);
2. a layer fusing several weighted nodes (a Myelin region, a horizontally
   fused pair of 1x1 convs) spreads its time over them **in proportion to
   their MACs** (equally when MACs are unknown);
3. a reformatting layer is charged like the layer it feeds: a misaligned
   channel count that forces a layout copy is a cost of that layer's width
   (except a reformat of the network's own input or output tensors, listed
   in the inspector's ``Bindings``: that is a fixed cost, ``other``);
4. anything else (standalone pooling, activation quantisers, the input
   reformat of the network) goes to ``other``, reported beside the layers so
   that ``sum(layers) + other`` is the whole profiled time.

Per-layer medians are then taken over runs of these per-run sums (a median of
sums, not a sum of medians).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import BadInput

if TYPE_CHECKING:
    from edgeprune.config import Target

TRT_PRECISIONS = ("fp32", "fp16", "int8")
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
OTHER = "other"  # the bucket for time no weighted layer owns
DEFAULT_WORKSPACE_MIB = 1024

_KNOWN_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "precision": str,
    "workspace_mib": int,
    "timing_cache": str,
    "dla_core": int,
    "gpu_fallback": bool,
    "int8_fp16_fallback": bool,
    "tf32": bool,
    "builder_optimization_level": int,
    "layer_timing": str,
}


# --------------------------------------------------------------------------- builder config


@dataclass(frozen=True)
class TrtBuildSpec:
    """What :func:`edgeprune.backends.trt.runtime.build_engine` sets on ``IBuilderConfig``."""

    target: str
    precision: str
    flags: tuple[str, ...]  # trt.BuilderFlag member names to set
    clear_flags: tuple[str, ...] = ()  # ... and to clear (TF32 when strict fp32 is asked)
    workspace_bytes: int = DEFAULT_WORKSPACE_MIB << 20
    timing_cache: Path | None = None
    dla_core: int | None = None
    profiling_verbosity: str = "DETAILED"  # trt.ProfilingVerbosity member name
    optimization_level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (for manifests)."""
        d = asdict(self)
        d["flags"] = list(self.flags)
        d["clear_flags"] = list(self.clear_flags)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return d

    def trtexec_args(self, onnx: str | os.PathLike[str], plan: str | os.PathLike[str]) -> list[str]:
        """The equivalent ``trtexec`` command line (to build the same engine on the board by hand)."""
        args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={plan}"]
        for flag in self.flags:
            args += {"FP16": ["--fp16"], "INT8": ["--int8"], "GPU_FALLBACK": ["--allowGPUFallback"]}.get(flag, [])
        if "TF32" in self.clear_flags:
            args.append("--noTF32")
        args.append(f"--memPoolSize=workspace:{self.workspace_bytes >> 20}M")
        if self.dla_core is not None:
            args.append(f"--useDLACore={self.dla_core}")
        if self.timing_cache:
            args.append(f"--timingCacheFile={self.timing_cache}")
        if self.optimization_level is not None:
            args.append(f"--builderOptimizationLevel={self.optimization_level}")
        args.append("--profilingVerbosity=detailed")
        return args


def check_trt_options(target: Target) -> None:
    """Raise :class:`BadInput` when a known TensorRT option in the target file has a wrong type or value."""
    opts = target.options
    where = f"target {target.name}"
    for key, want in _KNOWN_OPTIONS.items():
        if key not in opts:
            continue
        value = opts[key]
        bad_bool = isinstance(value, bool) and want is not bool
        if bad_bool or not isinstance(value, want):
            names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
            raise BadInput(f"{where}: option {key!r} must be {names}, got {type(value).__name__}")
    if opts.get("workspace_mib", 1) < 1:
        raise BadInput(f"{where}: option 'workspace_mib' must be >= 1")
    if opts.get("dla_core", 0) < 0:
        raise BadInput(f"{where}: option 'dla_core' must be >= 0")
    level = opts.get("builder_optimization_level")
    if level is not None and not 0 <= level <= 5:
        raise BadInput(f"{where}: option 'builder_optimization_level' must be 0..5, got {level}")
    if opts.get("layer_timing", "profiler") not in ("profiler", "events"):
        raise BadInput(f"{where}: option 'layer_timing' must be 'profiler' or 'events'")


def default_precision(target: Target) -> str:
    """The precision a build uses when none is asked: ``options.precision``, else fp32 if listed, else the first."""
    prec = target.options.get("precision")
    if prec:
        return str(prec)
    usable = [p for p in target.precisions if p in TRT_PRECISIONS]
    if not usable:
        raise BadInput(f"target {target.name}: none of its precisions ({', '.join(target.precisions)}) is one TensorRT builds")
    return "fp32" if "fp32" in usable else usable[0]


def default_cache_dir() -> Path:
    """Where profiling builds keep their timing caches: ``$EDGEPRUNE_CACHE_DIR/trt`` or ``~/.cache/edgeprune/trt``."""
    base = os.environ.get("EDGEPRUNE_CACHE_DIR")
    root = Path(base).expanduser() if base else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "edgeprune"
    return root / "trt"


def timing_cache_path(target: Target, engine_dir: str | os.PathLike[str] | None = None) -> Path:
    """The timing-cache file for ``target``: ``options.timing_cache``, else beside the engine, else the user cache.

    The cache holds measured tactic timings of one GPU and one TensorRT version
    (it says so in its header and TensorRT refuses a mismatch), so one file per
    target; several builds sharing it skip re-timing the kernels they share.
    """
    explicit = target.options.get("timing_cache")
    if explicit:
        return Path(str(explicit)).expanduser()
    folder = Path(engine_dir) if engine_dir is not None else default_cache_dir()
    return folder / f"{target.name}.timing.cache"


def build_spec(
    target: Target,
    precision: str | None = None,
    engine_dir: str | os.PathLike[str] | None = None,
) -> TrtBuildSpec:
    """Translate ``target`` (and the precision asked) into builder settings; :class:`BadInput` when they clash."""
    if target.backend != "trt":
        raise BadInput(f"target {target.name} has backend {target.backend!r}, not 'trt'")
    check_trt_options(target)
    opts = target.options
    prec = precision or default_precision(target)
    if prec not in TRT_PRECISIONS:
        raise BadInput(f"TensorRT precision must be one of {', '.join(TRT_PRECISIONS)}, got {prec!r}")
    if prec not in target.precisions:
        raise BadInput(f"target {target.name} does not list precision {prec} (it has {', '.join(target.precisions)})")
    dla = opts.get("dla_core")
    if dla is not None and prec == "fp32":
        raise BadInput(f"target {target.name}: DLA core {dla} runs fp16 or int8 only; ask for one of those, or drop 'dla_core'")
    flags: list[str] = []
    if prec == "fp16":
        flags.append("FP16")
    elif prec == "int8":
        flags.append("INT8")
        if opts.get("int8_fp16_fallback", True) and "fp16" in target.precisions:
            flags.append("FP16")
    if dla is not None and opts.get("gpu_fallback", True):
        flags.append("GPU_FALLBACK")
    clear = ("TF32",) if opts.get("tf32", True) is False else ()
    return TrtBuildSpec(
        target=target.name,
        precision=prec,
        flags=tuple(flags),
        clear_flags=clear,
        workspace_bytes=int(opts.get("workspace_mib", DEFAULT_WORKSPACE_MIB)) << 20,
        timing_cache=timing_cache_path(target, engine_dir),
        dla_core=dla,
        optimization_level=opts.get("builder_optimization_level"),
    )


def check_qdq_for_tensorrt(model: Any) -> list[str]:
    """Problems that keep TensorRT from building an explicit-quantisation ONNX (empty list: fine).

    TensorRT accepts only symmetric signed int8 Q/DQ: every zero point must be
    0 and of type int8 (ORT's default QUInt8 activations are asymmetric uint8).
    ``model`` is an ``onnx.ModelProto`` or a path.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    consts = {}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    problems = []
    n_qdq = 0
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        n_qdq += 1
        if len(n.input) < 3 or not n.input[2]:
            continue  # no zero point: int8... only for DequantizeLinear of int8 data; TensorRT assumes 0
        zp = inits.get(n.input[2]) or consts.get(n.input[2])
        if zp is None:
            problems.append(f"{n.name or n.op_type}: zero point {n.input[2]!r} is not a constant")
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8:
            problems.append(f"{n.name or n.op_type}: zero point of type {arr.dtype} (TensorRT wants int8; quantise with QInt8 activations and weights)")
        elif np.any(arr != 0):
            problems.append(f"{n.name or n.op_type}: non-zero zero point (TensorRT wants symmetric quantisation)")
    if n_qdq == 0:
        problems.append("no QuantizeLinear/DequantizeLinear nodes: an int8 TensorRT engine needs an explicit Q/DQ ONNX")
    return problems


# --------------------------------------------------------------------------- layer names


@dataclass(frozen=True)
class TrtLayer:
    """One engine layer: its TensorRT name (as ``IProfiler`` reports it) and the ONNX nodes fused into it."""

    name: str
    sources: tuple[str, ...]
    layer_type: str = ""
    tactic: str = ""
    precision: str = ""  # "Format/Datatype" of its first output, when the inspector says
    inputs: tuple[str, ...] = ()  # tensor names, when the inspector says
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class OnnxInfo:
    """What the mapping needs from the source ONNX graph: node order, op types and MACs of weighted nodes."""

    order: tuple[str, ...] = ()
    op_types: Mapping[str, str] = field(default_factory=dict)
    macs: Mapping[str, int] = field(default_factory=dict)


_META_RE = re.compile(r"\[ONNX Layer: ([^\]|]+?)(?:\s*\|[^\]]*)?\]")
_PROFILE_SUFFIX = re.compile(r"\s*\[profile \d+\]$")
_REFORMAT_RE = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.+)$")
_FOREIGN_RE = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
_WEIGHTED_NAME_RE = re.compile(r"^(ConvTranspose|Conv|Gemm|MatMul)(?:_\d+)?$")


def sources_from_metadata(metadata: str) -> list[str]:
    """ONNX node names in an inspector ``Metadata`` field (``[ONNX Layer: a]\\x1f[ONNX Layer: b]``)."""
    return [m.group(1).strip() for m in _META_RE.finditer(metadata or "")]


def strip_layer_name(name: str) -> str:
    """A profiler-reported layer name without the ``[profile N]`` suffix TensorRT adds for later profiles."""
    return _PROFILE_SUFFIX.sub("", name.strip())


def sources_from_name(name: str, order: Sequence[str] = ()) -> list[str]:
    """ONNX node names read off a fused TensorRT layer name (when no inspector metadata is at hand).

    Handles ``a + b + c``, ``PWN(PWN(a), b)``, ``{ForeignNode[a...b]}`` (expanded
    to every node from ``a`` to ``b`` when the ONNX node ``order`` is given) and
    reformatting copies (whose sources are those of the layer they feed).
    """
    name = strip_layer_name(name)
    m = _REFORMAT_RE.match(name)
    if m:
        return sources_from_name(m.group(1), order)
    m = _FOREIGN_RE.match(name)
    if m:
        inner = m.group(1)
        if "..." in inner:
            first, last = inner.split("...", 1)
            a, b = _split_fused(first), _split_fused(last)
            if a and b and order:
                pos = {n: i for i, n in enumerate(order)}
                if a[0] in pos and b[-1] in pos and pos[a[0]] <= pos[b[-1]]:
                    return list(order[pos[a[0]] : pos[b[-1]] + 1])
            return _dedup(a + b)
        return _split_fused(inner)
    return _split_fused(name)


def _split_fused(text: str) -> list[str]:
    text = re.sub(r"\bPWN\(", "", text)
    parts = re.split(r"\s+\+\s+|,\s+", text)
    out = []
    for p in parts:
        p = p.strip().rstrip(")").strip()
        if p:
            out.append(p)
    return _dedup(out)


def _dedup(items: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def parse_engine_info(info: str | Mapping[str, Any] | Sequence[Any], order: Sequence[str] = ()) -> list[TrtLayer]:
    """Engine layers from the inspector's JSON (``LayerInformationFormat.JSON``) or a recorded list of names.

    DETAILED verbosity gives ``{"Layers": [{"Name", "LayerType", "Metadata", ...}], "Bindings": [...]}``;
    LAYER_NAMES_ONLY gives ``{"Layers": ["name", ...]}``; a bare list of names (what an
    ``IProfiler`` reported) is accepted too. Sources come from ``Metadata`` when present,
    else from the fused name.
    """
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError as err:
            raise BadInput(f"malformed TensorRT engine information: {err.msg}") from None
    layers = info.get("Layers", []) if isinstance(info, Mapping) else info
    if not isinstance(layers, Sequence) or isinstance(layers, (str, bytes)):
        raise BadInput("TensorRT engine information holds no layer list")
    out = []
    for item in layers:
        if isinstance(item, str):
            out.append(TrtLayer(strip_layer_name(item), tuple(sources_from_name(item, order))))
            continue
        if not isinstance(item, Mapping) or "Name" not in item:
            raise BadInput(f"TensorRT engine information: a layer entry without a Name: {str(item)[:80]}")
        name = strip_layer_name(str(item["Name"]))
        srcs = sources_from_metadata(str(item.get("Metadata", "")))
        if srcs and _FOREIGN_RE.match(name) and order and len(srcs) == 2:
            srcs = sources_from_name(name, order) or srcs  # some versions list only a region's ends
        if not srcs:
            srcs = sources_from_name(name, order)
        ins, outs = _tensor_names(item.get("Inputs")), _tensor_names(item.get("Outputs"))
        first = (item.get("Outputs") or [None])[0]
        prec = str(first.get("Format/Datatype", "")) if isinstance(first, Mapping) else ""
        out.append(TrtLayer(name, tuple(srcs), str(item.get("LayerType", "")), str(item.get("TacticName", "")), prec, ins, outs))
    return out


def _tensor_names(items: Any) -> tuple[str, ...]:
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        return ()
    return tuple(str(t["Name"]) if isinstance(t, Mapping) and "Name" in t else str(t) for t in items)


def engine_bindings(info: str | Mapping[str, Any] | Sequence[Any]) -> tuple[str, ...]:
    """The engine's input/output tensor names (``Bindings`` of the inspector JSON; empty when not recorded)."""
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError:
            return ()
    if isinstance(info, Mapping):
        return tuple(str(b) for b in info.get("Bindings", []) or [])
    return ()


def onnx_node_to_layer(node_name: str) -> str | None:
    """The PyTorch module path of a TorchScript-exported ONNX node: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``.

    One reading of scope names for all backends: :func:`edgeprune.quant.names.module_path`
    (nested Sequentials too: ``/features/features.1/conv/conv.1/Conv`` -> ``features.1.conv.1``).
    Returns None for nodes without a module scope (``/Relu``, ``node_conv2d``).
    """
    from edgeprune.quant.names import module_path

    return module_path(node_name)


def onnx_info(model: Any) -> OnnxInfo:
    """Node order, op types and MACs (batch as exported) of an ONNX model or path, for :func:`build_layer_map`."""
    import numpy as np
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is a nicety here: MACs fall back to equal shares
        inferred = model
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    order, ops, macs = [], {}, {}
    for n in g.node:
        name = n.name or (n.output[0] if n.output else "")
        order.append(name)
        ops[name] = n.op_type
        if n.op_type not in WEIGHTED_OPS or not n.output or n.output[0] not in shapes:
            continue
        out = int(np.prod(shapes[n.output[0]]))
        if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1 and n.input[1] in shapes:
            w = shapes[n.input[1]]
            if n.op_type == "Conv":
                macs[name] = out * int(np.prod(w[1:]))
            else:  # ConvTranspose weight is [Cin, Cout/g, k...]: each input element feeds Cout/g*k outputs
                inp = shapes.get(n.input[0])
                if inp:
                    macs[name] = int(np.prod(inp)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm" and n.input[0] in shapes:
            a = shapes[n.input[0]]
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            macs[name] = out * (a[0] if trans_a else a[-1])
        elif n.op_type == "MatMul" and n.input[0] in shapes:
            macs[name] = out * shapes[n.input[0]][-1]
    return OnnxInfo(tuple(order), ops, macs)


def is_weighted(node: str, info: OnnxInfo | None = None) -> bool:
    """True for Conv / ConvTranspose / Gemm / MatMul nodes (by the ONNX op type, else by the name's last part)."""
    if info is not None and node in info.op_types:
        return info.op_types[node] in WEIGHTED_OPS
    last = node.rstrip("/").rsplit("/", 1)[-1]
    return bool(_WEIGHTED_NAME_RE.match(last))


@dataclass
class LayerMap:
    """Engine layers and, for each, how its time is shared among edgeprune layers (see the module doc)."""

    layers: list[TrtLayer]
    shares: dict[str, dict[str, float]]  # engine layer name -> {edgeprune layer or OTHER: fraction}
    layer_of: dict[str, str] = field(default_factory=dict)  # ONNX node -> edgeprune layer (explicit overrides)
    onnx: OnnxInfo | None = None
    known: set[str] | None = None

    def attribute(self, times: Mapping[str, float]) -> dict[str, float]:
        """Charge one run's per-engine-layer times (ms) to edgeprune layers; unknown names go to :data:`OTHER`."""
        out: dict[str, float] = {}
        for raw, ms in times.items():
            name = strip_layer_name(raw)
            share = self.shares.get(name)
            if share is None:
                share = self._guess(name)
            for layer, frac in share.items():
                out[layer] = out.get(layer, 0.0) + ms * frac
        return out

    def _guess(self, name: str) -> dict[str, float]:
        # a name the inspector did not list (e.g. a profiler-only reformat): parse it like a recorded name
        srcs = sources_from_name(name, self.onnx.order if self.onnx else ())
        share = _shares(srcs, self.onnx, self.layer_of, self.known)
        self.shares[name] = share
        return share

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: per engine layer its sources and shares."""
        return {
            "layers": [
                {"name": lay.name, "sources": list(lay.sources), "type": lay.layer_type, "precision": lay.precision, "shares": self.shares.get(lay.name, {})}
                for lay in self.layers
            ]
        }


def _layer_name(node: str, layer_of: Mapping[str, str], known: set[str] | None = None) -> str:
    name = layer_of.get(node) or onnx_node_to_layer(node) or node
    return name if known is None or name in known else OTHER


def _shares(srcs: Sequence[str], info: OnnxInfo | None, layer_of: Mapping[str, str], known: set[str] | None = None) -> dict[str, float]:
    weighted = [s for s in srcs if is_weighted(s, info)]
    if not weighted:
        return {OTHER: 1.0}
    macs = [(info.macs.get(s, 0) if info else 0) for s in weighted]
    total = sum(macs)
    fracs = [m / total for m in macs] if total > 0 and all(m > 0 for m in macs) else [1.0 / len(weighted)] * len(weighted)
    out: dict[str, float] = {}
    for s, f in zip(weighted, fracs):
        key = _layer_name(s, layer_of, known)
        out[key] = out.get(key, 0.0) + f
    return out


def build_layer_map(
    engine_info: str | Mapping[str, Any] | Sequence[Any],
    onnx: Any = None,
    layer_of: Mapping[str, str] | None = None,
    known: Iterable[str] | None = None,
) -> LayerMap:
    """The :class:`LayerMap` of an engine from its inspector JSON (or recorded layer names).

    ``onnx``: the source ONNX (model, path or :class:`OnnxInfo`) for node order,
    op types and MACs; ``layer_of``: explicit ONNX node -> edgeprune layer names
    (otherwise read off the node's module scope, see :func:`onnx_node_to_layer`);
    ``known``: the layers the caller keys (e.g. ``channel_groups(model).layers``):
    time of weighted nodes outside it (a fixed shortcut selection) goes to ``other``.
    """
    info = onnx if isinstance(onnx, OnnxInfo) or onnx is None else onnx_info(onnx)
    layers = parse_engine_info(engine_info, info.order if info else ())
    io = set(engine_bindings(engine_info))
    layer_of = dict(layer_of or {})
    known_set = set(known) if known is not None else None
    shares: dict[str, dict[str, float]] = {}
    by_name = {lay.name: lay for lay in layers}
    for lay in layers:
        m = _REFORMAT_RE.match(lay.name)
        if m and io and io & (set(lay.inputs) | set(lay.outputs)):
            shares[lay.name] = {OTHER: 1.0}  # converting the network's own input/output: a fixed cost
            continue
        if m and strip_layer_name(m.group(1)) in by_name:
            continue  # charged like the layer it feeds, below
        shares[lay.name] = _shares(lay.sources, info, layer_of, known_set)
    for lay in layers:
        if lay.name in shares:
            continue
        fed = strip_layer_name(_REFORMAT_RE.match(lay.name).group(1))  # type: ignore[union-attr]
        shares[lay.name] = dict(shares.get(fed) or _shares(by_name[fed].sources, info, layer_of, known_set))
    return LayerMap(layers, shares, layer_of, info, known_set)


__all__ = [
    "OTHER",
    "LayerMap",
    "OnnxInfo",
    "TrtBuildSpec",
    "TrtLayer",
    "build_layer_map",
    "build_spec",
    "check_qdq_for_tensorrt",
    "check_trt_options",
    "default_precision",
    "engine_bindings",
    "is_weighted",
    "onnx_info",
    "onnx_node_to_layer",
    "parse_engine_info",
    "sources_from_metadata",
    "sources_from_name",
    "timing_cache_path",
]
