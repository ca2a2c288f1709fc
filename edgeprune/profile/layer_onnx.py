"""One layer configuration as a standalone ONNX graph, the way the runtime sees it in the real model.

BN is folded into the conv (a bias), and what ORT fuses after the conv is
kept: ReLU, or the residual Add (+ ReLU) with a second input of the output's
shape. Weights are random: latency does not depend on their values.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeprune.graph.signature import LayerSignature

OPSET = 17


def layer_onnx(sig: LayerSignature, batch: int = 1, seed: int = 0, residual_input: bool = True) -> onnx.ModelProto:
    """Build the ONNX model of ``sig`` (fp32; int8 variants are made by quantising this graph).

    ``residual_input=False`` makes the residual of a ``+add`` layer a constant
    initializer instead of a second graph input (the int8 quantiser takes
    single-input graphs; the Add costs the same).
    """
    rng = np.random.default_rng(seed)
    nodes, inits, inputs = [], [], []
    post = set(sig.post.split("+")) if sig.post else set()
    if sig.op == "conv2d":
        groups = sig.in_channels if sig.groups == -1 else sig.groups
        w = rng.standard_normal((sig.out_channels, sig.in_channels // groups, *sig.kernel)).astype(np.float32) * 0.1
        b = rng.standard_normal(sig.out_channels).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
        x_shape = [batch, sig.in_channels, *sig.in_hw]
        oh, ow = sig.out_hw
        y_shape = [batch, sig.out_channels, oh, ow]
        nodes.append(
            helper.make_node(
                "Conv", ["x", "W", "B"], ["conv"], name="layer/Conv",
                kernel_shape=list(sig.kernel), strides=list(sig.stride),
                pads=[sig.padding[0], sig.padding[1], sig.padding[0], sig.padding[1]], group=groups,
            )
        )
    elif sig.op == "linear":
        w = rng.standard_normal((sig.out_channels, sig.in_channels)).astype(np.float32) * 0.1
        b = rng.standard_normal(sig.out_channels).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
        x_shape = [batch, sig.in_channels]
        y_shape = [batch, sig.out_channels]
        nodes.append(helper.make_node("Gemm", ["x", "W", "B"], ["conv"], name="layer/Gemm", transB=1))
    else:
        raise ValueError(f"cannot build a layer graph for op {sig.op!r}")
    inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape))
    cur = "conv"
    if "add" in post:
        if residual_input:
            inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, y_shape))
        else:
            inits.append(numpy_helper.from_array(rng.standard_normal(y_shape).astype(np.float32), "residual"))
        nodes.append(helper.make_node("Add", [cur, "residual"], ["sum"], name="layer/Add"))
        cur = "sum"
    if "relu" in post:
        nodes.append(helper.make_node("Relu", [cur], ["act"], name="layer/Relu"))
        cur = "act"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="layer/out"))
    graph = helper.make_graph(nodes, "layer", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeprune")
    model.ir_version = 8
    return model
