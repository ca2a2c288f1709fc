"""Run an engine beside the PyTorch model on held-out data and report agreement.

On labelled classification data the gate is top-1 agreement (the engine predicts the
class PyTorch predicts). Where agreement says nothing, the gate is the output error
relative to the outputs' scale (mean |engine - torch| / mean |torch|):

- on random inputs (``compress --data none``): argmax agreement on noise is not evidence
  of a correct engine, and there is no accuracy to report ("not measured");
- for a model whose output is not one (batch, classes) logits tensor (several heads, a
  segmentation map): every output is compared, flattened.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.backends.base import Engine


@dataclass
class VerifyReport:
    """Agreement between an engine and the PyTorch model (None: not measured)."""

    images: int
    top1_agreement: float | None  # percent of samples where both predict the same class (logits models)
    max_abs_error: float
    mean_abs_error: float
    engine_top1: float | None  # accuracy on real labels; None on random inputs or without class labels
    torch_top1: float | None
    passed: bool
    relative_error: float = 0.0  # mean |engine - torch| / mean |torch|, over every output
    gate: str = ""  # what decided ``passed``
    random_inputs: bool = False

    def to_dict(self) -> dict:
        """JSON-friendly dict."""
        return asdict(self)

    def summary(self) -> str:
        """One line for people: what was compared and what gated it."""
        what = f"{self.images} {'random inputs' if self.random_inputs else 'samples'}"
        agree = f"top-1 agreement {self.top1_agreement:.1f}%, " if self.top1_agreement is not None else ""
        acc = (f", engine top-1 {self.engine_top1:.2f}%" if self.engine_top1 is not None
               else ", accuracy not measured")
        return (f"{agree}max |error| {self.max_abs_error:.2e}, relative error {self.relative_error:.2e} on {what}"
                f"{acc} (gate: {self.gate})")


def format_metric(value: float | None, unit: str = "") -> str:
    """A metric for a table: ``"not measured"`` for None or NaN, never ``nan``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    return f"{value:.2f}{unit}"


@torch.no_grad()
def verify(engine: Engine, model: nn.Module, data: Any, limit: int = 500, min_agreement: float = 99.0,
           max_relative_error: float = 0.05, random_inputs: bool | None = None) -> VerifyReport:
    """Compare ``engine`` and ``model`` on the first ``limit`` samples of ``data``.

    ``data``: an ``ImageSet``, anything :func:`edgeprune.data.as_source` takes (its validation
    batches; inputs may be tuples or dicts), or an object with ``batches(batch_size, limit)``
    (``RandomImages``; then ``random_inputs`` defaults to True). Passes when top-1 agreement is at
    least ``min_agreement`` on labelled logits, else when the relative output error is at most
    ``max_relative_error``.
    """
    from edgeprune.data.batch import call_model, flat_outputs, output_tensors, to_numpy

    model.eval()
    if random_inputs is None:
        random_inputs = bool(getattr(data, "random", False))
    batches = _batches(data, limit)
    agree = n = correct_e = correct_t = 0
    labelled = logits = True
    max_err = sum_err = sum_ref = 0.0
    count = 0
    for x, y in batches:
        out_t = call_model(model, x)
        ref = flat_outputs(out_t).numpy()
        out = engine.run(to_numpy(x)).astype(np.float64)
        err = np.abs(out - ref)
        max_err = max(max_err, float(err.max()))
        sum_err += float(err.sum())
        sum_ref += float(np.abs(ref).sum())
        count += err.size
        ts = output_tensors(out_t)
        logits = logits and len(ts) == 1 and ts[0].dim() == 2
        labelled = labelled and isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point()
        if logits:
            pe, pt = out.argmax(1), ref.argmax(1)
            agree += int((pe == pt).sum())
            if labelled:
                yy = y.numpy()
                correct_e += int((pe == yy).sum())
                correct_t += int((pt == yy).sum())
        n += len(ref)
    n = max(n, 1)
    mean_err = sum_err / max(count, 1)
    rel = mean_err / max(sum_ref / max(count, 1), 1e-12)
    agreement = 100.0 * agree / n if logits else None
    accuracy = labelled and logits and not random_inputs
    if agreement is not None and not random_inputs:
        passed, gate = agreement >= min_agreement, f"top-1 agreement >= {min_agreement:g}%"
    else:
        passed, gate = rel <= max_relative_error, f"relative error <= {max_relative_error:g}"
    return VerifyReport(n, agreement, max_err, mean_err, 100.0 * correct_e / n if accuracy else None,
                        100.0 * correct_t / n if accuracy else None, bool(passed), rel, gate, bool(random_inputs))


def _batches(data: Any, limit: int) -> Any:
    from edgeprune.data import ImageSet
    from edgeprune.data.source import DataSource, as_source

    if isinstance(data, ImageSet) or (hasattr(data, "batches") and not isinstance(data, DataSource)):
        return data.batches(100, limit)
    src = as_source(data)
    return src.val_batches(limit, 100)


from edgeprune._callable import make_callable

make_callable(__name__, "verify")
