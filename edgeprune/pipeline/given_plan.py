"""``edgeprune apply``: the plan comes from a file (made by ``edgeprune plan`` or ``compress`` elsewhere) instead of
being searched; it is checked against this model and shaped like a searched plan for the stages that follow."""
from __future__ import annotations

from typing import Any

from edgeprune.pipeline.context import Run


def plan_from_file(run: Run) -> dict[str, Any]:
    """The run's plan document from ``config.plan_file``: kept channels, this target's precisions, the source."""
    from edgeprune.models.pruned import check_plan, read_plan

    p = read_plan(run.config.plan_file)
    check_plan(p, run.graph)
    if p.input_shape is not None and tuple(p.input_shape[1:]) != tuple(run.example.shape[1:]):
        run.ui.log(f"[yellow]warning: the plan was made at input {tuple(p.input_shape)}, this run uses "
                   f"{tuple(run.example.shape)}[/]")
    precisions = {n: v for n, v in p.precisions_for(run.target.name).items() if n in run.graph.layers}
    run.ui.log(f"applying plan {p.path}: {len(p.keep)} of {len(run.graph.prunable)} groups pruned, "
               f"{sum(v == 'int8' for v in precisions.values())} int8 layers"
               + (f" (made with edgeprune {p.version} for {', '.join(p.targets)})" if p.version else ""))
    measured: dict[str, Any] = {}
    if run.limits is not None and run.limits.get("peak_memory") is not None:
        from edgeprune.pipeline.measure import cost_of
        from edgeprune.prune import prune

        widths = {g.id: len(p.keep.get(g.id, range(g.size))) for g in run.graph.prunable}
        small = prune(run.dense, p.keep, run.example, graph=run.graph)
        measured = cost_of(small, run.example, precisions, run.graph.signatures(widths, precisions or None))
    return {"planner": "file", "plan_file": p.path, "keep": p.keep, "precisions": precisions, "measured": measured,
            "budget": p.budget, "targets": p.targets, "source": p.doc.get("source", {})}


__all__ = ["plan_from_file"]
