"""int8 post-training quantisation for ONNX Runtime: static, QDQ, per-channel weights, calibrated on real data.

Traps handled here (DESIGN.md, measured on this machine):

* Format: activations QUInt8 with weights QInt8 (U8S8) ran faster than fp32 on
  the AVX2 CPUs of this project while S8S8 ran slower; ``reduce_range`` (7-bit
  weights) avoids saturation in the int8 kernels without VNNI. The format is
  read from the target file (``int8_activation``, ``int8_weight``,
  ``reduce_range`` under ``[options]``).
* Excluded nodes: the quantiser leaves them fp32 in the file, but ORT's
  ``WeightBiasQuantization`` graph optimiser quantises their weights again at
  session creation (their inputs still come through DequantizeLinear). So
  whenever nodes are excluded, :class:`QuantResult` lists that optimiser in
  ``disabled_optimizers`` and every session must be made with it
  (``make_session(path, target, disabled_optimizers=q.disabled_optimizers)``).
  :func:`edgeprune.quant.runtime_precisions` checks the graph ORT really runs.
* ``CalibMaxIntermediateOutputs`` in onnxruntime 1.32 drops the collected
  data without computing ranges; it is not used. Histogram methods (entropy,
  percentile) are fed in strides so memory stays bounded.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import BadInput
from edgeprune.fileio import atomic_path
from edgeprune.quant.names import QuantWarning, UnmatchedLayers, match_nodes

MIN_CALIB_SAMPLES = 100
RANDOM_CALIB_SAMPLES = 8
METHODS = ("minmax", "entropy", "percentile")
# ops that move no float data worth quantising: never warned about
_NEUTRAL_OPS = {
    "Constant", "ConstantOfShape", "Shape", "Size", "Identity", "Cast", "CastLike", "Range", "NonZero",
    "Expand", "Tile", "Dropout", "QuantizeLinear", "DequantizeLinear", "Equal", "Less", "Greater", "Not",
}


@dataclass
class QuantResult:
    """What :func:`quantize_onnx` wrote and how a session must load it."""

    path: Path
    disabled_optimizers: list[str]
    excluded_nodes: list[str]
    format: str
    warnings: list[str] = field(default_factory=list)
    method: str = "minmax"
    calib_samples: int = 0
    random_calibration: bool = False
    unquantizable_nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def int8_format(target: Any = None) -> tuple[str, str, bool]:
    """(activation type, weight type, reduce_range) from the target's options; U8S8 without reduce_range by default."""
    opts = dict(getattr(target, "options", {}) or {})
    act = str(opts.get("int8_activation", "QUInt8"))
    wgt = str(opts.get("int8_weight", "QInt8"))
    for what, v in (("int8_activation", act), ("int8_weight", wgt)):
        if v not in ("QUInt8", "QInt8"):
            raise BadInput(f"target {getattr(target, 'name', '?')}: option {what} must be QUInt8 or QInt8, got {v!r}")
    return act, wgt, bool(opts.get("reduce_range", False))


def _format_name(act: str, wgt: str, reduce_range: bool, per_channel: bool) -> str:
    short = {"QUInt8": "U8", "QInt8": "S8"}
    text = f"QDQ {short[act]}{short[wgt]}"
    text += " per-channel" if per_channel else " per-tensor"
    return text + (" reduce_range" if reduce_range else "")


class _Reader:
    """A CalibrationDataReader over NCHW arrays (one per graph input), ``batch`` samples per call (exported graphs have batch 1)."""

    def __init__(self, data: dict[str, np.ndarray], batch: int) -> None:
        self.data, self.batch = data, batch
        self.n = min(len(v) for v in data.values()) // batch
        self.start, self.end, self.i = 0, self.n, 0

    def __len__(self) -> int:
        return self.n

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.i = start_index, end_index, start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        b = self.batch
        feed = {k: v[self.i * b : (self.i + 1) * b] for k, v in self.data.items()}
        self.i += 1
        return feed

    def rewind(self) -> None:
        self.i = self.start


class _DropPreprocessHint(logging.Filter):
    """ORT's quantiser's root-logger noise: the pre-processing hint, and one line per 1-D weight (LayerNorm scales,
    layer-scale gammas) it quantises per tensor because per-channel has no axis 1 there (ConvNeXt: 40 lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "pre-processing before quantization" not in msg and "is out-of-range for weight" not in msg


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    f = _DropPreprocessHint()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def _inline_shared_initializers(model: Any) -> int:
    """Give every ``Identity(initializer)`` output its own initializer; returns how many were inlined.

    The exporter shares equal tensors (the zero biases that BN folding leaves in a freshly initialised
    MobileNetV2) through Identity nodes; ORT's quantiser then finds a bias that is not an initializer,
    warns once per conv and leaves it fp32.
    """
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    keep, n = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
            n += 1
        else:
            keep.append(node)
    if n:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return n


def _quantizable_ops() -> set[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def _inputs(model: Any) -> list[tuple[str, list[int | None]]]:
    inits = {i.name for i in model.graph.initializer}
    out = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        if i.type.tensor_type.elem_type != 1:  # FLOAT
            raise BadInput(f"quantize_onnx: input {i.name!r} is not float32")
        out.append((i.name, [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]))
    if not out:
        raise BadInput("quantize_onnx: the model has no input")
    return out


def _stride(n: int, cap: int = 32) -> int:
    for s in range(min(cap, n), 0, -1):
        if n % s == 0:
            return s
    return 1


def _warn(msgs: list[str], text: str, depth: int = 0) -> None:
    """Record ``text`` and warn it at the caller of :func:`quantize_onnx` (``depth``: helper levels in between)."""
    msgs.append(text)
    warnings.warn(text, QuantWarning, stacklevel=3 + depth)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    target: Any = None,
    calib: Any = None,
    exclude: Sequence[str] = (),
    method: str = "minmax",
    per_channel: bool = True,
    *,
    seed: int = 0,
) -> QuantResult:
    """Quantise an fp32 ONNX model to int8 QDQ for ONNX Runtime; write it atomically to ``out_path``.

    ``target``: a Target (or its name) whose options choose the format (see module doc).
    ``calib``: NCHW float32 array (or tensor) of real, normalised calibration
    images (``{input name: array}`` for a graph with several inputs); None calibrates on random data, which is only fit for timing (the
    profiler times int8 layer variants that way) and warns. Fewer than
    ``MIN_CALIB_SAMPLES`` real samples warns too.
    ``exclude``: ONNX node names, or module names (``layer1.0.conv1``; a module
    name selects every node inside it) kept fp32; a name that matches nothing
    is an error (:class:`edgeprune.quant.names.UnmatchedLayers`, a BadInput; the
    pipeline, whose names come from the model itself, turns it into an internal error). An op ONNX Runtime cannot quantise stays fp32 (one warning names
    the ops and the first nodes).
    ``method``: minmax | entropy | percentile (ORT's calibrators).
    """
    t0 = time.perf_counter()
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    target = _int8_target(target, method)
    act, wgt, reduce_range = int8_format(target)
    fmt = _format_name(act, wgt, reduce_range, per_channel)
    model = _load_onnx(fp32_path)
    msgs: list[str] = []
    data, batch = _calibration_data(model, calib, seed, fp32_path, msgs)
    random_calib = calib is None
    n_samples = min(len(v) for v in data.values())
    excluded = _excluded_nodes(model, exclude, fp32_path)
    unquantizable = _unquantizable_nodes(model, excluded, msgs)
    disabled = ["WeightBiasQuantization"] if excluded else []
    meta = {
        "edgeprune.int8.format": fmt,
        "edgeprune.int8.method": method,
        "edgeprune.int8.calib_samples": str(0 if random_calib else n_samples),
        "edgeprune.int8.random_calibration": json.dumps(random_calib),
        "edgeprune.int8.excluded_nodes": json.dumps(excluded),
        "edgeprune.int8.disabled_optimizers": json.dumps(disabled),
    }
    options = _StaticOptions(act, wgt, reduce_range, per_channel, method, excluded)
    _quantize_static(model, fp32_path, out_path, _Reader(data, batch), options, meta)
    return QuantResult(
        path=out_path,
        disabled_optimizers=disabled,
        excluded_nodes=excluded,
        format=fmt,
        warnings=msgs,
        method=method,
        calib_samples=0 if random_calib else n_samples,
        random_calibration=random_calib,
        unquantizable_nodes=unquantizable,
        seconds=time.perf_counter() - t0,
    )


def _int8_target(target: Any, method: str) -> Any:
    """The Target (a name resolved), refused in one line when it has no int8; the calibration method checked."""
    from edgeprune.config import get_target

    if target is not None and not hasattr(target, "options"):
        target = get_target(target)
    if target is not None and "int8" not in target.precisions:
        raise BadInput(f"target {target.name} has no int8 precision (its precisions: {', '.join(target.precisions)})")
    if method not in METHODS:
        raise BadInput(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
    return target


def _load_onnx(fp32_path: Path) -> Any:
    """The fp32 ONNX model in ``fp32_path`` (external data not loaded); one line when it cannot be read."""
    import onnx

    try:
        return onnx.load(str(fp32_path), load_external_data=False)
    except FileNotFoundError:
        raise BadInput(f"ONNX model not found: {fp32_path}") from None
    except Exception as err:  # noqa: BLE001 - onnx raises many kinds
        raise BadInput(f"cannot read ONNX model {fp32_path}: {str(err).splitlines()[0] if str(err) else err!r}") from None


def _calibration_data(model: Any, calib: Any, seed: int, fp32_path: Path,
                      msgs: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """``({input name: float32 array}, batch)``: ``calib`` checked against the model's inputs and cut to whole
    batches, or random data (``calib`` None) with a warning; too few real samples warn too."""
    inputs = _inputs(model)
    batch = next((d[0] for _, d in inputs if d and d[0]), 1)
    shapes = {name: [d or 1 for d in dims[1:]] for name, dims in inputs}
    if calib is None:
        rng = np.random.default_rng(seed)
        data = {name: rng.standard_normal((RANDOM_CALIB_SAMPLES * batch, *shp)).astype(np.float32) for name, shp in shapes.items()}
        _warn(msgs, f"calibrating {fp32_path.name} on random data: fine for timing, meaningless for accuracy", depth=1)
        return data, batch
    if not isinstance(calib, dict):
        if len(inputs) != 1:
            raise BadInput(f"the model has {len(inputs)} inputs ({', '.join(shapes)}): give calib as {{input name: array}}")
        calib = {inputs[0][0]: calib}
    if set(calib) != set(shapes):
        raise BadInput(f"calibration data names {sorted(calib)} do not match the model inputs {sorted(shapes)}")
    data = {}
    for name, arr in calib.items():
        arr = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != len(shapes[name]) + 1 or list(arr.shape[1:]) != shapes[name]:
            raise BadInput(f"calibration data of shape {tuple(arr.shape)} does not fit the model input {name!r} (want N x {shapes[name]})")
        if not np.isfinite(arr).all():
            raise BadInput("calibration data holds NaN or infinite values")
        if len(arr) < batch:
            raise BadInput(f"calibration data has {len(arr)} samples; the model needs batches of {batch}")
        data[name] = arr
    n = min(len(v) for v in data.values())
    if n < MIN_CALIB_SAMPLES:
        _warn(msgs, f"only {n} calibration samples (fewer than {MIN_CALIB_SAMPLES}): activation ranges may be unreliable",
              depth=1)
    return {k: v[: n // batch * batch] for k, v in data.items()}, batch


def _excluded_nodes(model: Any, exclude: Sequence[str], fp32_path: Path) -> list[str]:
    """The node names ``exclude`` selects (:func:`~edgeprune.quant.names.match_nodes`); a name that matches
    nothing raises :class:`~edgeprune.quant.names.UnmatchedLayers`."""
    excluded, unmatched = match_nodes(model.graph.node, exclude)
    if unmatched:
        known = sorted({n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")})[:6]
        raise UnmatchedLayers(f"exclude: {', '.join(map(repr, unmatched))} matches no node of {fp32_path.name} (e.g. {', '.join(known)})",
                              unmatched)
    return excluded


def _unquantizable_nodes(model: Any, excluded: Sequence[str], msgs: list[str]) -> list[str]:
    """Nodes whose op ONNX Runtime cannot quantise (they stay fp32), warned about in one line (ConvNeXt has two per
    block); neutral ops and excluded nodes are not."""
    from collections import Counter

    quantizable = _quantizable_ops()
    found = [n for n in model.graph.node
             if n.op_type not in quantizable and n.op_type not in _NEUTRAL_OPS and n.name not in excluded]
    unquantizable = [n.name or n.output[0] for n in found]
    if found:
        ops = Counter(n.op_type for n in found)
        kinds = ", ".join(f"{op} x{k}" if k > 1 else op for op, k in ops.items())
        first = ", ".join(repr(x) for x in unquantizable[:3]) + (", ..." if len(found) > 3 else "")
        _warn(msgs, f"ONNX Runtime cannot quantise op {kinds} ({len(found)} node{'s' if len(found) > 1 else ''}: "
                    f"{first}): {'they stay' if len(found) > 1 else 'it stays'} fp32", depth=1)
    return unquantizable


@dataclass
class _StaticOptions:
    """What ORT's ``quantize_static`` is asked for: the format, the calibration method, the nodes kept fp32."""

    act: str
    wgt: str
    reduce_range: bool
    per_channel: bool
    method: str
    excluded: list[str]


def _quantize_static(model: Any, fp32_path: Path, out_path: Path, reader: _Reader, opts: _StaticOptions,
                     meta: dict[str, str]) -> None:
    """Run ORT's static QDQ quantiser (quietly) on ``model``, stamp ``meta`` into the result's metadata and write
    it atomically to ``out_path``; ORT's own errors become one line."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[opts.method]
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": opts.act == "QInt8"}
    if opts.method != "minmax":
        extra["CalibStridedMinMax"] = _stride(len(reader))  # histograms per stride: bounded memory
    src_dir = tempfile.TemporaryDirectory(prefix="edgeprune-q-")
    src = fp32_path
    if _inline_shared_initializers(model):
        src = Path(src_dir.name) / fp32_path.name
        onnx.save(model, str(src))
    with src_dir, atomic_path(out_path) as tmp, _quiet_root_logger(), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            quantize_static(
                str(src), str(tmp), reader,
                quant_format=QuantFormat.QDQ,
                per_channel=opts.per_channel,
                reduce_range=opts.reduce_range,
                activation_type=getattr(QuantType, opts.act),
                weight_type=getattr(QuantType, opts.wgt),
                calibrate_method=calib_method,
                nodes_to_exclude=list(opts.excluded),
                extra_options=extra,
            )
        except BadInput:
            raise
        except Exception as err:  # noqa: BLE001 - ORT's quantiser raises many kinds
            raise BadInput(f"ONNX Runtime could not quantise {fp32_path.name}: {str(err).splitlines()[0] if str(err) else err!r}") from None
        q = onnx.load(str(tmp))
        for k, v in meta.items():
            p = q.metadata_props.add()
            p.key, p.value = k, v
        onnx.save(q, str(tmp))


__all__ = ["METHODS", "MIN_CALIB_SAMPLES", "QuantResult", "int8_format", "quantize_onnx"]
