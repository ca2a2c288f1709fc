"""fp32 -> fp16 ONNX conversion with onnx.helper only (onnxconverter-common is not a dependency).

fp16 is meant for TensorRT targets (and GPUs); ONNX Runtime's CPU provider has
few fp16 kernels and inserts Cast nodes around the rest, so an fp16 graph is
usually *slower* there. On this project's CPU machines fp16 engines are
checked numerically against fp32 (``edgeprune.quant.fp16`` tests), never timed.

What the conversion does:

* float32 initializers and Constant tensors -> float16 (clipped to +-65504),
* float32 value types -> float16, Cast(to=FLOAT) -> Cast(to=FLOAT16),
* ops that must stay fp32 (shape/size arguments, ``Resize`` scales, random and
  a few numerically fragile reductions in ``KEEP_FP32``) get Casts around them,
* with ``keep_io_fp32`` the graph inputs/outputs stay float32 with a Cast after
  each input and before each output, so callers feed and read float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import BadInput
from edgeprune.fileio import atomic_path

FP16_MAX = 65504.0
# ops computed in fp32 (Casts inserted around them)
KEEP_FP32 = {
    "Resize", "Upsample", "Range", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "Multinomial", "NonMaxSuppression", "TopK", "RoiAlign", "ConstantOfShape", "EyeLike", "CumSum",
}


def _to16(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)


def convert_model_fp16(model: Any, keep_io_fp32: bool = True) -> Any:
    """Return an fp16 copy of an ``onnx.ModelProto`` (see module doc)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is optional here
        typed = model
    types = {v.name: v.type.tensor_type.elem_type for v in list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    g = model.graph
    init_names = {i.name for i in g.initializer}
    kept = [n for n in g.node if n.op_type in KEEP_FP32]
    kept_inputs = {i for n in kept for i in n.input}
    # initializers used only by fp32-kept nodes stay fp32
    used_by_other = {i for n in g.node if n.op_type not in KEEP_FP32 for i in n.input}
    for init in g.initializer:
        if init.data_type == F32 and (init.name in used_by_other or init.name not in kept_inputs):
            init.CopyFrom(numpy_helper.from_array(_to16(numpy_helper.to_array(init)), init.name))
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == F32:
                    a.t.CopyFrom(numpy_helper.from_array(_to16(numpy_helper.to_array(a.t)), a.t.name))
                elif a.name in ("value_float", "value_floats"):
                    raise BadInput(f"to_fp16_onnx: Constant {n.name!r} uses {a.name}; re-export with tensor constants")
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == F32:
                    a.i = F16
    # value types
    float_io = {v.name for v in list(g.input) + list(g.output) if v.type.tensor_type.elem_type == F32}
    for v in g.value_info:
        if v.type.tensor_type.elem_type == F32:
            v.type.tensor_type.elem_type = F16
    new_nodes = []
    rename_in: dict[str, str] = {}
    if keep_io_fp32:
        for v in g.input:
            if v.name in float_io and v.name not in init_names:
                rename_in[v.name] = v.name + "_fp16"
                new_nodes.append(helper.make_node("Cast", [v.name], [v.name + "_fp16"], name=f"{v.name}_cast_fp16", to=F16))
    else:
        for v in list(g.input) + list(g.output):
            if v.name in float_io:
                v.type.tensor_type.elem_type = F16
    out_names = {v.name for v in g.output if v.name in float_io} if keep_io_fp32 else set()
    rename_out = {o: o + "_fp16" for o in out_names}
    counter = 0
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename_in:
                n.input[i] = rename_in[name]
            elif name in rename_out:
                n.input[i] = rename_out[name]
        for i, name in enumerate(n.output):
            if name in rename_out:
                n.output[i] = rename_out[name]
        if n.op_type in KEEP_FP32:
            # cast fp16 float inputs up, outputs down (shape-like int inputs pass through untouched)
            for i, name in enumerate(n.input):
                if not name or types.get(name) != F32 or (name in init_names and name not in used_by_other):
                    continue
                up = f"{name}_fp32_{counter}"
                counter += 1
                new_nodes.append(helper.make_node("Cast", [name], [up], name=f"{up}_cast", to=F32))
                n.input[i] = up
            new_nodes.append(n)
            for i, name in enumerate(n.output):
                if types.get(name) != F32:
                    continue
                tmp = f"{name}_fp32_{counter}"
                counter += 1
                n.output[i] = tmp
                new_nodes.append(helper.make_node("Cast", [tmp], [name], name=f"{tmp}_cast", to=F16))
            continue
        new_nodes.append(n)
    for o in out_names:
        new_nodes.append(helper.make_node("Cast", [rename_out[o]], [o], name=f"{o}_cast_fp32", to=F32))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # stale after the rewrite; ORT re-infers
    return model


def to_fp16_onnx(fp32_path: str | Path, out_path: str | Path, keep_io_fp32: bool = True) -> Path:
    """Convert an fp32 ONNX file to fp16 and write it atomically; returns ``out_path``.

    The result passes ``onnx.checker``. See the module doc for what is kept fp32
    and why fp16 is checked numerically, not timed, on CPU targets.
    """
    import onnx

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    try:
        model = onnx.load(str(fp32_path))
    except FileNotFoundError:
        raise BadInput(f"ONNX model not found: {fp32_path}") from None
    except Exception as err:  # noqa: BLE001 - onnx raises many kinds
        raise BadInput(f"cannot read ONNX model {fp32_path}: {str(err).splitlines()[0] if str(err) else err!r}") from None
    half = convert_model_fp16(model, keep_io_fp32)
    try:
        onnx.checker.check_model(half)
    except Exception as err:  # noqa: BLE001 - checker errors vary
        raise BadInput(f"fp16 conversion of {fp32_path.name} produced an invalid graph: {str(err).splitlines()[0]}") from None
    with atomic_path(out_path) as tmp:
        onnx.save(half, str(tmp))
    return out_path


__all__ = ["KEEP_FP32", "convert_model_fp16", "to_fp16_onnx"]
