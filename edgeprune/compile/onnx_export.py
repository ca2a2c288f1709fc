"""PyTorch -> ONNX export, written atomically."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from edgeprune.errors import BadInput, first_line
from edgeprune.fileio import atomic_path

OPSET = 17


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (batch 1, static shapes) to ``path``.

    Uses the TorchScript exporter first: it is ~25x faster than the dynamo
    exporter here (0.2 s against 5 s for ResNet-20) and names nodes after their
    module scope (``/layer1/layer1.0/conv1/Conv``), which is how per-node profiles
    map back to layers. Falls back to the dynamo exporter when it fails.
    """
    model = model.eval()
    example = example[:1]
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                    input_names=["input"], output_names=["output"], do_constant_folding=True,
                )
        except Exception as first:  # noqa: BLE001 - any TorchScript failure: try the dynamo exporter
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET)
                    prog.save(str(tmp))
            except Exception as err:  # noqa: BLE001 - both exporters failed: one-line user-facing error
                msg = first_line(err)
                raise BadInput(f"cannot export the model to ONNX: {msg} (TorchScript exporter: {first_line(first)})") from None
    return path
