"""VTA emitter: the "FPGA build" (instruction stream, weights in VTA layout, report) on the simulated accelerator."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.config import Target
from edgeprune.fileio import write_json


def emit_vta(model: nn.Module, target: Target, out_dir: Path, example: torch.Tensor, options: dict[str, Any]) -> Engine:
    """Compile ``model`` to int8 VTA instructions; ``options['calib']`` is a batch of real images (NCHW)."""
    from edgeprune.backends.vta.runtime import vta_config
    from edgeprune.vta import build, quantize_model, reference_forward
    from edgeprune.vta.build import is_resnet_family
    from edgeprune.vta.cnn import dequantise_output, quantize_cnn, reference_forward_cnn
    from edgeprune.vta.quantize import dequantise_logits

    config = vta_config(target)
    calib = options.get("calib")
    if calib is None:
        calib = example
    report = build(model, example[:1], calib, config, out_dir)
    files = {p.stem if p.suffix != ".json" else "vta_report": p for p in (out_dir / "vta").iterdir()}
    manifest = {
        "target": target.name,
        "backend": "vta",
        "board": target.options.get("board", "pynq"),
        "clock_mhz": target.clock_mhz,
        "cycles": report.get("cycles"),
        "time_ms": report.get("time_ms"),
        "simulated": True,
        "files": {k: str(v.relative_to(out_dir)) for k, v in files.items()},
    }
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)
    if is_resnet_family(model):
        qnet = quantize_model(model, calib)

        def run(x: np.ndarray) -> np.ndarray:
            # the numpy int8 reference the simulator is bit-exact against, dequantised to logits
            return dequantise_logits(qnet, reference_forward(qnet, torch.as_tensor(x))["logits"]).astype(np.float32)
    else:
        net = quantize_cnn(model, calib)

        def run(x: np.ndarray) -> np.ndarray:
            # the general path's numpy int8 reference (accelerator layers + host steps), dequantised
            out = reference_forward_cnn(net, torch.as_tensor(x))[net.output]
            return dequantise_output(net, out).astype(np.float32)

    return Engine(target, out_dir, files, {**manifest, "report": report}, run, batched=True)
