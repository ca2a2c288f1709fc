"""OpenVINO's performance counters mapped back to edgeprune layers (PyTorch module names).

OpenVINO reports one counter per *executed* node of its optimised graph
(``InferRequest.get_profiling_info()``, with ``PERF_COUNT: True``). Fused ops
(the ReLU and residual Add folded into a convolution) report ``NOT_RUN``; the
convolution's counter holds their time. A node is charged to a layer by its name:

* the CPU plugin names a convolution after the ONNX node, with suffixes it adds
  when it splits the bias off (``/layer1/layer1.0/conv1/Conv/WithoutBiases``);
  the module path is read off the name as for ORT's profiler
  (:func:`edgeprune.quant.names.module_path`);
* the node producing a graph output is renamed after the output tensor
  (``output``): the ONNX file's own output -> node table maps it back;
* a ``Reorder`` (layout conversion) is named ``SRC_fmt_fmt_DST`` and is charged to
  the layer it feeds (``DST``), like TensorRT's reformat layers;
* anything else (pooling, the input reorder, unknown names) goes to ``other``.

Counter resolution is 1 microsecond.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgeprune.quant.names import module_path

OTHER = "other"
#: suffixes the CPU plugin appends to an ONNX node's name when it rewrites the node
_SUFFIXES = ("/WithoutBiases", "/fq_weights_1", "/fq_input_0")


def onnx_output_producers(onnx_path: str | Path) -> dict[str, str]:
    """``{output tensor name: producing ONNX node name}`` for the graph outputs of ``onnx_path``."""
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    outs = {o.name for o in g.output}
    return {t: n.name for n in g.node for t in n.output if t in outs and n.name}


def _strip(name: str) -> str:
    for suf in _SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def layer_of_counter(node_name: str, node_type: str, renamed: Mapping[str, str] | None = None,
                     known: Iterable[str] | None = None) -> str:
    """The edgeprune layer one executed OpenVINO node belongs to, or :data:`OTHER` (see the module doc)."""
    renamed = renamed or {}
    name = node_name
    if node_type == "Reorder" and "_/" in name:
        name = name[name.rfind("_/") + 1 :]
    name = renamed.get(name, name)
    known_set = set(known) if known is not None else None
    layer = module_path(_strip(name), known_set)
    if layer is None:
        return OTHER
    if known_set is not None and layer not in known_set:
        return OTHER
    return layer


def executed(infos: Iterable[Any]) -> list[tuple[str, str, float]]:
    """``(node name, node type, ms)`` of the executed nodes of one ``get_profiling_info()`` answer (running averages since compile)."""
    out = []
    for i in infos:
        if getattr(i.status, "name", str(i.status)) != "EXECUTED":
            continue
        out.append((i.node_name, i.node_type, i.real_time.total_seconds() * 1e3))
    return out


def attribute(infos: Iterable[Any], renamed: Mapping[str, str] | None = None,
              known: Iterable[str] | None = None) -> dict[str, float]:
    """One ``get_profiling_info()`` answer charged to layers: ``{layer or "other": ms}`` (running averages, see runtime)."""
    known_list = list(known) if known is not None else None
    out: dict[str, float] = {}
    for name, typ, ms in executed(infos):
        key = layer_of_counter(name, typ, renamed, known_list)
        out[key] = out.get(key, 0.0) + ms
    return out
