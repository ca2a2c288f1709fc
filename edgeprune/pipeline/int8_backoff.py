"""The verify stage's fallback: an int8 engine that fails verification gets its most int8-sensitive layers back
in fp32, step by step, until it passes (or is all fp32). See :mod:`edgeprune.quant.backoff` for the ranking.

The latency of the result is measured afterwards as always, so a fallback that costs the budget is reported
as a missed budget, never hidden."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeprune.pipeline.context import Run


def back_off_int8(run: Run, rebuild: Callable[[Run], None], reverify: Callable[[Run], None]) -> None:
    """Revert int8 layers to fp32 (most output-disturbing first, a quarter of the rest per step), rebuilding and
    re-verifying the engine after each step; records the steps in ``run.plan["int8_backoff"]``."""
    from edgeprune.data.batch import batch_len, take
    from edgeprune.quant.backoff import output_sensitivity, revert_order, revert_step

    assert run.plan is not None and run.verify is not None
    int8 = [n for n, p in run.precisions.items() if p == "int8"]
    inputs = run.calib if run.calib is not None else run.example
    inputs = take(inputs, 0, min(64, batch_len(inputs)))
    run.ui.log(f"engine check failed ({run.verify.summary()}); ranking the {len(int8)} int8 layers by how much int8 "
               "alone moves the outputs, to give the worst back to fp32 ...")
    sens = output_sensitivity(run.small, inputs, int8)
    order = revert_order(sens) + [n for n in int8 if n not in sens]
    steps: list[dict[str, Any]] = []
    first = run.verify.to_dict()
    while not run.verify.passed and order:
        k = revert_step(len(order))
        back, order = order[:k], order[k:]
        run.plan["precisions"].update(dict.fromkeys(back, "fp32"))
        rebuild(run)
        reverify(run)
        steps.append({"to_fp32": back, "int8_left": len(order), "passed": run.verify.passed,
                      "top1_agreement": run.verify.top1_agreement, "relative_error": run.verify.relative_error})
        run.ui.log(f"  {len(back)} layer(s) back to fp32 ({', '.join(back[:4])}{' ...' if len(back) > 4 else ''}), "
                   f"{len(order)} int8 left: {run.verify.summary()}")
    run.plan["int8_backoff"] = {"first_check": first, "sensitivity": {n: round(v, 6) for n, v in sens.items()},
                                "steps": steps, "passed": run.verify.passed}
