"""Run an engine beside the PyTorch model on held-out data and report agreement."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.data import ImageSet


@dataclass
class VerifyReport:
    """Agreement between an engine and the PyTorch model."""

    images: int
    top1_agreement: float  # percent of images where both predict the same class
    max_abs_error: float
    mean_abs_error: float
    engine_top1: float
    torch_top1: float
    passed: bool

    def to_dict(self) -> dict:
        """JSON-friendly dict."""
        return asdict(self)


@torch.no_grad()
def verify(engine: Engine, model: nn.Module, data: ImageSet, limit: int = 500, min_agreement: float = 99.0) -> VerifyReport:
    """Compare ``engine`` and ``model`` on the first ``limit`` images of ``data``."""
    model.eval()
    agree = n = correct_e = correct_t = 0
    max_err = 0.0
    sum_err = 0.0
    count = 0
    for x, y in data.batches(100, limit):
        ref = model(x).numpy()
        out = engine.run(x.numpy())
        err = np.abs(out - ref)
        max_err = max(max_err, float(err.max()))
        sum_err += float(err.sum())
        count += err.size
        pe, pt = out.argmax(1), ref.argmax(1)
        agree += int((pe == pt).sum())
        correct_e += int((pe == y.numpy()).sum())
        correct_t += int((pt == y.numpy()).sum())
        n += len(y)
    n = max(n, 1)
    agreement = 100.0 * agree / n
    return VerifyReport(n, agreement, max_err, sum_err / max(count, 1), 100.0 * correct_e / n, 100.0 * correct_t / n, agreement >= min_agreement)

from edgeprune._callable import make_callable

make_callable(__name__, "verify")
