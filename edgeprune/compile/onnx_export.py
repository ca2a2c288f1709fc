"""PyTorch -> ONNX export, written atomically."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput, first_line
from edgeprune.fileio import atomic_path

OPSET = 17


def export_onnx(model: nn.Module, example: Any, path: str | Path) -> Path:
    """Export ``model`` (batch 1, static shapes) to ``path``.

    ``example`` is one tensor (ONNX input ``input``), a tuple of tensors (positional
    inputs ``input0``, ``input1``, ...) or a dict (keyword inputs, named by their keys).
    Several outputs are named ``output0``, ``output1``, ... (one: ``output``).

    Uses the TorchScript exporter first: it is ~25x faster than the dynamo
    exporter here (0.2 s against 5 s for ResNet-20) and names nodes after their
    module scope (``/layer1/layer1.0/conv1/Conv``), which is how per-node profiles
    map back to layers. Falls back to the dynamo exporter when it fails.
    """
    from edgeprune.data.batch import call_model, input_names, output_tensors, take

    model = model.eval()
    example = take(example, 1)
    args, kwargs = _arguments(example)
    names = input_names(example)
    with torch.no_grad():
        n_out = len(output_tensors(call_model(model, example)))
    outputs = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, args, str(tmp), kwargs=kwargs, dynamo=False, opset_version=OPSET,
                    input_names=names, output_names=outputs, do_constant_folding=True,
                )
        except Exception as first:  # noqa: BLE001 - any TorchScript failure: try the dynamo exporter
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    prog = torch.onnx.export(model, args, kwargs=kwargs, dynamo=True, opset_version=OPSET,
                                             input_names=names, output_names=outputs)
                    prog.save(str(tmp))
            except Exception as err:  # noqa: BLE001 - both exporters failed: one-line user-facing error
                msg = first_line(err)
                raise BadInput(f"cannot export the model to ONNX: {msg} (TorchScript exporter: {first_line(first)})") from None
    return path


def _arguments(example: Any) -> tuple[tuple, dict | None]:
    """``torch.onnx.export``'s positional and keyword arguments for ``example``."""
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), None
    return (example,), None
