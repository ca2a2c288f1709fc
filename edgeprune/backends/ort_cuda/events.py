"""ONNX Runtime's profiler JSON, charged to edgeprune layers (PyTorch module names), on CPU or CUDA.

ORT's profiler (``SessionOptions.enable_profiling``) writes a Chrome-trace list of events. The ones read here:

* ``{"cat": "Session", "name": "model_run", "ts", "dur"}``: one per ``run``; the other events of that run lie
  inside its ``[ts, ts + dur]`` window (microseconds since the profiler started);
* ``{"cat": "Node", "name": "<node>_kernel_time", "dur", "args": {"op_name", "provider", ...}}``: one per
  executed node of the *optimised* graph. On the CPU provider ``dur`` is the node's compute time. On the CUDA
  provider it is only the host time to enqueue the node's kernels (the GPU runs them asynchronously);
* ``{"cat": "Kernel", "name": "<CUDA kernel>", "dur", "args": {"op_name", "stream", "grid_x", ...}}``: the GPU's
  own duration of each kernel a node launched, written only by ORT builds with ``--enable_cuda_profiling``
  (CUPTI). ORT places a node's kernels right after its ``_kernel_time`` event, in launch order, with the node's
  ``op_name`` copied into their args (docs/performance/tune-performance/profiling-tools.md of ORT;
  ``GPUProfilerBase::MergeEvents`` in onnxruntime/core/common/gpu_profiler_common.cc). A kernel is charged to
  the closest preceding ``_kernel_time`` node.

A node's time is the sum of its kernels when it has any, else its own ``dur``. Node names are those of ORT's
optimised graph: the exporter's scope names (``/layer1/layer1.0/conv1/Conv``) read as
:func:`edgeprune.quant.names.module_path` does, with ORT's rewrite suffixes (``_nchwc``, ``_token_12``,
``_fused``...) stripped, and names ORT takes from an output tensor (a fused ``Conv+Relu`` named ``z_nchwc``)
looked up in the original graph's tensor -> node table. Anything else is charged to :data:`OTHER`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput
from edgeprune.quant.names import layer_of_node, module_path

OTHER = "other"
NODE_SUFFIX = "_kernel_time"
#: suffixes ORT appends to node names when it rewrites them (layout transforms, fusions, CSE tokens)
_REWRITE = re.compile(r"(_nchwc|_token_\d+|_fused|_fusion|_output_\d+|_nhwc|_internal)$", re.IGNORECASE)


def load_events(path: str | Path) -> list[dict[str, Any]]:
    """The event list of an ORT profile file (a JSON list, or ``{"traceEvents": [...]}``)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot read ORT profile {path}: {err}") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise BadInput(f"ORT profile {path} is not a list of trace events")
    return events


#: ops ORT fuses into the layer before them (a conv's bias, BN, activation and residual add): a node of these
#: types that names no layer of its own inherits the layer of its first input's producer
POST_OPS = {"BatchNormalization", "Relu", "Clip", "Add", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "LeakyRelu", "Tanh"}


def onnx_name_table(onnx_path: str | Path, known: Collection[str] | None = None) -> dict[str, str]:
    """``{ONNX node name or output tensor name: edgeprune layer}`` for the nodes of ``onnx_path`` that belong to one.

    Nodes of :data:`POST_OPS` without a layer of their own (``/layer1/layer1.0/Relu``) take their input's layer:
    ORT names a fused ``Conv+Relu`` after the Relu's output tensor.
    """
    import onnx

    known_set = set(known) if known is not None else None
    table: dict[str, str] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:  # topologically sorted
        layer = layer_of_node(node, known_set)
        if layer is not None and known_set is not None and layer not in known_set:
            layer = None
        if layer is None and node.op_type in POST_OPS:
            layer = next((table[i] for i in node.input if i in table), None)
        if layer is None:
            continue
        if node.name:
            table[node.name] = layer
        for out in node.output:
            table[out] = layer
    return table


def layer_of_event(name: str, table: Mapping[str, str] | None = None, known: Collection[str] | None = None) -> str:
    """The layer one ``<node>_kernel_time`` event belongs to, or :data:`OTHER` (see the module doc)."""
    node = name.removesuffix(NODE_SUFFIX)
    names = [node]
    while (stripped := _REWRITE.sub("", names[-1])) != names[-1]:
        names.append(stripped)
    table = table or {}
    for n in names:
        if n in table and (known is None or table[n] in known):
            return table[n]
    for n in names:
        layer = module_path(n, known)
        if layer is not None and (known is None or layer in known):
            return layer
    return OTHER


@dataclass
class ProfiledRuns:
    """Per-run, per-layer times (ms) read from one ORT profile.

    ``runs``: one ``{layer or "other": ms}`` per ``model_run``, in order; ``kernel_events``: how many CUDA kernel
    events the profile had (0: the node times are host times where the provider is CUDA); ``providers``: the
    execution providers that ran nodes; ``nodes``: ``{ORT node name: layer}`` of every node seen.
    """

    runs: list[dict[str, float]]
    kernel_events: int = 0
    providers: set[str] = field(default_factory=set)
    nodes: dict[str, str] = field(default_factory=dict)

    @property
    def device_timed(self) -> bool:
        """Whether the figures are the device's own: kernel events present, or every node ran on the CPU provider."""
        return self.kernel_events > 0 or self.providers <= {"CPUExecutionProvider"}

    def totals(self, skip: int = 0) -> list[float]:
        """Each run's total over all layers (ms), the first ``skip`` runs (warm-up) left out."""
        return [sum(r.values()) for r in self.runs[skip:]]

    def layer(self, name: str, skip: int = 0) -> list[float]:
        """Each run's time of layer ``name`` (ms; 0 where it did not run), the first ``skip`` runs left out."""
        return [r.get(name, 0.0) for r in self.runs[skip:]]


def charge_runs(events: Iterable[Mapping[str, Any]], table: Mapping[str, str] | None = None,
                known: Collection[str] | None = None, single: str | None = None) -> ProfiledRuns:
    """Charge the node and kernel events of every ``model_run`` to layers (see the module doc).

    ``single``: charge every node to this one name (a one-layer graph, where all nodes are the layer).
    """
    events = list(events)
    windows = sorted((int(e["ts"]), int(e["ts"]) + int(e.get("dur", 0))) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")

    def run_of(ts: int) -> int | None:
        for i, (lo, hi) in enumerate(windows):
            if lo <= ts <= hi:
                return i
        return None

    # (run, node name) -> [host dur, kernel dur, kernel count], in first-seen order
    per_node: dict[tuple[int, str], list[float]] = {}
    out = ProfiledRuns([{} for _ in windows])
    parent: tuple[int, str] | None = None
    for e in events:
        cat, name = e.get("cat"), str(e.get("name", ""))
        if cat == "Node":
            if not name.endswith(NODE_SUFFIX):
                continue  # fence_before / fence_after
            run = run_of(int(e.get("ts", -1)))
            if run is None:
                parent = None
                continue
            args = e.get("args") or {}
            if args.get("provider"):
                out.providers.add(str(args["provider"]))
            node = name[: -len(NODE_SUFFIX)]
            parent = (run, node)
            per_node.setdefault(parent, [0.0, 0.0, 0])[0] += float(e.get("dur", 0))
        elif cat == "Kernel":
            out.kernel_events += 1
            if parent is not None:
                slot = per_node[parent]
                slot[1] += float(e.get("dur", 0))
                slot[2] += 1
    for (run, node), (host, kern, count) in per_node.items():
        layer = single if single is not None else out.nodes.get(node) or layer_of_event(node, table, known)
        out.nodes[node] = layer
        us = kern if count else host
        out.runs[run][layer] = out.runs[run].get(layer, 0.0) + us / 1000.0
    return out


__all__ = ["NODE_SUFFIX", "OTHER", "ProfiledRuns", "charge_runs", "layer_of_event", "load_events", "onnx_name_table"]
