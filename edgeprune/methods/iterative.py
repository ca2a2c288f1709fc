"""Iterative importance pruning: repeated (re-score, prune a little, short fine-tune) cycles.

Papers: Molchanov, Tyree, Karras, Aila & Kautz 2017, *Pruning Convolutional
Neural Networks for Resource Efficient Inference* (ICLR) -- greedy
criterion-based pruning interleaved with fine-tuning; Molchanov et al. 2019,
*Importance Estimation for Neural Network Pruning* (CVPR) -- the Taylor
importance re-estimated as the network changes. The budget schedule is the
planner's (:func:`edgeprune.plan.schedule.iterative`, NetAdapt/HALP style):
every cycle re-scores the *current* model, plans a tighter step of the
budget exactly on the latency table (or MACs), removes channels for real and
fine-tunes briefly; this module only adds the scoring, the fine-tuning and
the per-cycle measurements.

When to use it: high compression ratios, where one-shot pruning removes so
much that fine-tuning cannot recover; small steps with re-estimated
importance lose less accuracy, at the price of a fine-tune per cycle.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeprune.graph.signature import LayerSignature
from edgeprune.methods._train import test_split, train_split
from edgeprune.ui import QUIET, UI


class MacsPredictor:
    """A stand-in "target" whose cost is millions of MACs, for planning without a latency profile."""

    unit = "MMAC"

    def layer_cost(self, sig: LayerSignature) -> float:
        """MMACs of one layer."""
        return sig.macs / 1e6

    def has(self, sig: LayerSignature) -> bool:
        """Every layer has a cost."""
        return True

    def model_cost(self, sigs: Mapping[str, LayerSignature]) -> float:
        """MMACs of the conv/linear layers."""
        return float(sum(s.macs for s in sigs.values())) / 1e6


@dataclass
class IterativeResult:
    """The final model and one curve point per cycle (cycle 0 = the dense model)."""

    model: nn.Module
    curve: list[dict[str, Any]] = field(default_factory=list)
    schedule: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (no model)."""
        return {"method": "iterative", "curve": self.curve}


def _point(cycle: int, model: nn.Module, example: Any, preds: Mapping[str, Any], test: Any, eval_limit: int | None,
           t0: float) -> dict[str, Any]:
    from edgeprune.graph import channel_groups
    from edgeprune.methods._train import top1
    from edgeprune.metrics import count_macs, count_params

    sigs = channel_groups(model, example).signatures()
    pt: dict[str, Any] = {"cycle": cycle, "macs": count_macs(model, example), "params": count_params(model)}
    for name, p in preds.items():
        try:
            pt[f"predicted_{name}"] = float(p.model_cost(sigs))
            pt[f"unit_{name}"] = getattr(p, "unit", "ms")
        except Exception as err:  # noqa: BLE001 - a profile without a table for some pruned shape: leave the point out
            pt[f"predicted_{name}"] = None
            pt[f"error_{name}"] = str(err).splitlines()[0]
    pt["top1"] = top1(model, test, eval_limit) if test is not None else None
    pt["seconds"] = round(time.perf_counter() - t0, 1)
    return pt


def iterative_prune(model: nn.Module, data: Any, budget: str = "macs=0.5x", steps: int = 4, *, criterion: str = "taylor",
                    predictors: Mapping[Any, Any] | None = None, finetune_epochs: float = 0.2, lr: float = 0.01,
                    batch_size: int = 64, max_images: int | None = None, kd: bool = False, score_batches: int = 4,
                    eval_limit: int | None = None, granularity: int | None = None, decay: str = "geometric",
                    seed: int = 0, ui: UI = QUIET) -> IterativeResult:
    """Prune ``model`` to ``budget`` in ``steps`` cycles; return the model and the (cost, top-1) curve.

    ``predictors``: ``{target: Profile or Predictor}`` for latency budgets and the
    predicted latency of each cycle; without one, MACs are the cost
    (:class:`MacsPredictor`). Each cycle fine-tunes ``finetune_epochs`` with
    :func:`edgeprune.recover` (distilling from the dense model when ``kd``).
    The input model is not modified.
    """
    from edgeprune.importance import importance
    from edgeprune.plan.schedule import iterative
    from edgeprune.recover import RecoverConfig, recover

    dense = copy.deepcopy(model).eval()
    current = copy.deepcopy(model).eval()
    train, test = train_split(data), test_split(data)
    example = train.example(1)
    preds = dict(predictors) if predictors else {"macs": MacsPredictor()}
    names = {(k.name if hasattr(k, "name") else str(k)): v for k, v in preds.items()}
    named_preds = {n: (v.predictor() if hasattr(v, "predictor") and not hasattr(v, "model_cost") else v) for n, v in names.items()}
    t0 = time.perf_counter()
    curve = [_point(0, current, example, named_preds, test, eval_limit, t0)]
    ui.log(f"cycle 0 (dense): {curve[0]['macs'] / 1e6:.1f} MMAC, top-1 {curve[0]['top1']}")

    def rescore(m: nn.Module) -> dict:
        return importance(m, train, criterion, batches=score_batches, batch_size=batch_size, seed=seed)

    def finetune(m: nn.Module, step: int) -> nn.Module:
        if finetune_epochs <= 0:
            return m
        cfg = RecoverConfig(epochs=finetune_epochs, lr=lr, batch_size=batch_size, max_images=max_images,
                            seed=seed + step, kd_alpha=0.7 if kd else 0.0)
        return recover(m, data, dense if kd else None, config=cfg, ui=QUIET).model

    def on_step(step: int, plan: Any, m: nn.Module) -> None:
        pt = _point(step, m, example, named_preds, test, eval_limit, t0)
        curve.append(pt)
        ui.log(f"cycle {step}: {pt['macs'] / 1e6:.1f} MMAC, top-1 {pt['top1']}")

    from edgeprune.plan import PlanConfig

    sched = iterative(current, budget, preds, rescore=rescore, finetune=finetune, steps=steps, example=example,
                      decay=decay, on_step=on_step, config=PlanConfig(granularity=granularity))
    return IterativeResult(sched.model, curve, sched)


__all__ = ["IterativeResult", "MacsPredictor", "iterative_prune"]
