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

#: ops beyond conv2d / linear, for the device cost model's kernel samples (edgeprune.costmodel.space):
#: ``maxpool`` / ``avgpool`` (kernel, stride, padding), ``gap`` (global average pool), ``add`` (two tensors
#: of the input's shape), ``act`` (the activation named by ``post``: relu, relu6, hardswish, silu, gelu) and
#: ``se`` (squeeze-excite: global pool, 1x1 conv to ``out_channels``, ReLU, 1x1 conv back, hard-sigmoid, Mul).
#: Each keeps ``in_channels`` channels (``se`` squeezes to ``out_channels`` inside).
KERNEL_OPS = ("maxpool", "avgpool", "gap", "add", "act", "se")
ACTIVATIONS = ("relu", "relu6", "hardswish", "silu", "gelu")


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
        tokens = sig.in_hw[0] * sig.in_hw[1]
        if tokens == 1:  # a classifier: one row
            x_shape, y_shape = [batch, sig.in_channels], [batch, sig.out_channels]
            nodes.append(helper.make_node("Gemm", ["x", "W", "B"], ["conv"], name="layer/Gemm", transB=1))
        else:  # a Linear over positions (channels last), as the exporter emits it: MatMul + Add
            x_shape, y_shape = [batch, tokens, sig.in_channels], [batch, tokens, sig.out_channels]
            inits[-2] = numpy_helper.from_array(np.ascontiguousarray(w.T), "W")
            nodes.append(helper.make_node("MatMul", ["x", "W"], ["mm"], name="layer/MatMul"))
            nodes.append(helper.make_node("Add", ["mm", "B"], ["conv"], name="layer/Add_bias"))
    elif sig.op in KERNEL_OPS:
        return _kernel_onnx(sig, batch, rng, residual_input)
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


def _kernel_onnx(sig: LayerSignature, batch: int, rng: np.random.Generator, residual_input: bool) -> onnx.ModelProto:
    """The graph of one :data:`KERNEL_OPS` signature (channel-preserving ops and squeeze-excite)."""
    c = sig.in_channels
    x_shape = [batch, c, *sig.in_hw]
    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    y_shape = list(x_shape)
    if sig.op in ("maxpool", "avgpool"):
        oh, ow = sig.out_hw
        y_shape = [batch, c, oh, ow]
        attrs = {"kernel_shape": list(sig.kernel), "strides": list(sig.stride),
                 "pads": [sig.padding[0], sig.padding[1], sig.padding[0], sig.padding[1]]}
        nodes.append(helper.make_node("MaxPool" if sig.op == "maxpool" else "AveragePool", ["x"], ["y0"], name="layer/Pool", **attrs))
    elif sig.op == "gap":
        y_shape = [batch, c, 1, 1]
        nodes.append(helper.make_node("GlobalAveragePool", ["x"], ["y0"], name="layer/GAP"))
    elif sig.op == "add":
        if residual_input:
            inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, x_shape))
        else:
            inits.append(numpy_helper.from_array(rng.standard_normal(x_shape).astype(np.float32), "other"))
        nodes.append(helper.make_node("Add", ["x", "other"], ["y0"], name="layer/Add"))
    elif sig.op == "act":
        act = sig.post or "relu"
        if act == "relu":
            nodes.append(helper.make_node("Relu", ["x"], ["y0"], name="layer/Relu"))
        elif act == "relu6":
            inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
            nodes.append(helper.make_node("Clip", ["x", "lo", "hi"], ["y0"], name="layer/Clip"))
        elif act == "hardswish":
            nodes.append(helper.make_node("HardSwish", ["x"], ["y0"], name="layer/HardSwish"))
        elif act == "silu":
            nodes += [helper.make_node("Sigmoid", ["x"], ["sig"], name="layer/Sigmoid"),
                      helper.make_node("Mul", ["x", "sig"], ["y0"], name="layer/Mul")]
        elif act == "gelu":
            inits += [numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
                      numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                      numpy_helper.from_array(np.array(0.5, np.float32), "half")]
            nodes += [helper.make_node("Div", ["x", "sqrt2"], ["g0"]), helper.make_node("Erf", ["g0"], ["g1"]),
                      helper.make_node("Add", ["g1", "one"], ["g2"]), helper.make_node("Mul", ["x", "g2"], ["g3"]),
                      helper.make_node("Mul", ["g3", "half"], ["y0"], name="layer/Gelu")]
        else:
            raise ValueError(f"unknown activation {act!r} (known: {', '.join(ACTIVATIONS)})")
    elif sig.op == "se":
        s = max(1, sig.out_channels)
        w1 = rng.standard_normal((s, c, 1, 1)).astype(np.float32) * 0.1
        w2 = rng.standard_normal((c, s, 1, 1)).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(np.zeros(s, np.float32), "B1"),
                  numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(np.zeros(c, np.float32), "B2")]
        nodes += [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="layer/GAP"),
                  helper.make_node("Conv", ["p", "W1", "B1"], ["s1"], name="layer/Squeeze", kernel_shape=[1, 1]),
                  helper.make_node("Relu", ["s1"], ["s2"]),
                  helper.make_node("Conv", ["s2", "W2", "B2"], ["s3"], name="layer/Excite", kernel_shape=[1, 1]),
                  helper.make_node("HardSigmoid", ["s3"], ["s4"], alpha=1.0 / 6, beta=0.5),
                  helper.make_node("Mul", ["x", "s4"], ["y0"], name="layer/Scale")]
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(f"cannot build a layer graph for op {sig.op!r}")
    nodes.append(helper.make_node("Identity", ["y0"], ["y"], name="layer/out"))
    graph = helper.make_graph(nodes, "layer", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeprune")
    model.ir_version = 8
    return model
