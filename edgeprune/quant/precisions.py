"""Read back from an ONNX graph the precision each Conv/Gemm/MatMul layer really has."""
from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput
from edgeprune.quant.names import layer_of_node

_WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"}
_INT8_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_INT_TYPES = {2, 3}  # onnx TensorProto UINT8, INT8


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model), load_external_data=False)
    except FileNotFoundError:
        raise BadInput(f"ONNX model not found: {model}") from None
    except Exception as err:  # noqa: BLE001 - onnx raises many kinds
        raise BadInput(f"cannot read ONNX model {model}: {str(err).splitlines()[0] if str(err) else err!r}") from None


def _names(nodes: list[Any]) -> dict[str, str]:
    """Node name -> key: its layer name when that is unique among ``nodes``, else the node name."""
    layers = {n.name: layer_of_node(n) for n in nodes}
    counts = Counter(v for v in layers.values() if v)
    return {n.name: (layers[n.name] if layers[n.name] and counts[layers[n.name]] == 1 else (n.name or n.output[0])) for n in nodes}


def count_precisions(onnx_path: Any) -> dict[str, str]:
    """``{layer_or_node_name: "int8" | "fp32"}`` for every Conv/Gemm/MatMul of the graph.

    A layer is ``int8`` when its weight reaches it through DequantizeLinear from
    an int8/uint8 tensor (QDQ files) or when it is an integer op (QLinearConv,
    MatMulInteger, ... in graphs ORT has optimised); otherwise ``fp32``. Keys are
    module names (``layer1.0.conv1``) derived from the node names, or the node
    name where no unique module name exists.
    """
    model = _load(onnx_path)
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    init_types = {i.name: i.data_type for i in g.initializer}

    def int8_tensor(name: str) -> bool:
        if name in init_types:
            return init_types[name] in _INT_TYPES
        p = producer.get(name)
        if p is None:
            return False
        if p.op_type == "QuantizeLinear":
            return True  # quantised on the fly (a float weight through Q -> DQ)
        if p.op_type in ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze"):
            return int8_tensor(p.input[0])
        if p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return a.t.data_type in _INT_TYPES
        return False

    def weight_is_int8(node: Any) -> bool:
        if len(node.input) < 2:
            return False
        w = node.input[1]
        p = producer.get(w)
        while p is not None and p.op_type in ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Cast"):
            w = p.input[0]
            p = producer.get(w)
        if p is None or p.op_type != "DequantizeLinear":
            return False
        return int8_tensor(p.input[0])

    nodes = [n for n in g.node if n.op_type in _WEIGHT_OPS | _INT8_OPS]
    keys = _names(nodes)
    out: dict[str, str] = {}
    for n in nodes:
        if n.op_type in _INT8_OPS:
            out[keys[n.name]] = "int8"
        elif n.op_type == "MatMul" and not any(i in init_types or (producer.get(i) and producer[i].op_type == "DequantizeLinear") for i in n.input):
            continue  # activation x activation MatMul: no weight
        else:
            out[keys[n.name]] = "int8" if weight_is_int8(n) else "fp32"
    return out


def runtime_precisions(onnx_path: str | Path, target: Any = None, disabled_optimizers: Sequence[str] | None = None) -> dict[str, str]:
    """:func:`count_precisions` of the graph ONNX Runtime really runs: the session's optimised model.

    The session is built at ORT_ENABLE_EXTENDED (where QDQ groups become
    QLinearConv and node names survive; ALL adds layout rewrites that rename
    nodes) with ``disabled_optimizers``. An excluded layer that ORT quantised
    anyway shows up here as ``int8``.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = getattr(target, "threads", 1) or 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgeprune-opt-") as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers or []))
        return count_precisions(Path(tmp) / "optimized.onnx")


__all__ = ["count_precisions", "runtime_precisions"]
