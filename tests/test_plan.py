"""The planner: MILP against brute force, budgets, infeasibility, granularity, multi-target, freeze, plan.json."""
from __future__ import annotations

import json
import math
import re
import sys
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.budget import DenseContext
from edgeprune.config import Budget, Target
from edgeprune.errors import BadInput, BudgetMissed
from edgeprune.graph import channel_groups
from edgeprune.metrics import count_macs, model_bytes
from edgeprune.plan import Plan, PlanConfig, apply, iterative, one_shot, plan, step_limits
from edgeprune.plan import costs as C
from edgeprune.plan.brute import brute_force

# --------------------------------------------------------------------------- synthetic predictors


class SynthPredictor:
    """Deterministic, pair-coupled layer costs: MACs x an alignment factor of (cin, cout) x a per-config jitter.

    The jitter (crc32 of the signature key) makes costs non-monotone and non-separable in
    (in, out, precision), which is what the planner must handle exactly.
    """

    def __init__(self, unit: str = "ms", scale: float = 1e-5, offset: float = 0.05, align: int = 4, int8: float = 0.55,
                 salt: str = "") -> None:
        self.unit, self.scale, self.offset, self.align, self.int8, self.salt = unit, scale, offset, align, int8, salt

    def layer_cost(self, sig) -> float:
        c = sig.macs * self.scale
        if sig.in_channels % self.align or sig.out_channels % self.align:
            c *= 1.7
        if sig.dtype == "int8":
            c *= self.int8 if sig.out_channels >= 4 else 1.1
        jitter = (zlib.crc32((self.salt + sig.key()).encode()) % 1000) / 1000.0
        return c * (0.8 + 0.4 * jitter) + 0.01 * self.scale * 1e5

    def model_cost(self, sigs) -> float:
        return sum(self.layer_cost(s) for s in sigs.values()) + self.offset


class NoInt8Predictor(SynthPredictor):
    """A target whose profile has no int8 numbers for thin layers: those choices must be excluded."""

    def layer_cost(self, sig) -> float:
        if sig.dtype == "int8" and sig.out_channels < 4:
            raise KeyError(sig.key())
        return super().layer_cost(sig)


# --------------------------------------------------------------------------- small models


class Chain(nn.Module):
    """conv-bn-relu x3 then a linear head: groups c1 (6), c2 (5), c3 (4), coupled pairwise by c2, c3 and fc."""

    def __init__(self, widths=(6, 5, 4)) -> None:
        super().__init__()
        a, b, c = widths
        self.c1, self.b1 = nn.Conv2d(3, a, 3, padding=1, bias=False), nn.BatchNorm2d(a)
        self.c2, self.b2 = nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b)
        self.c3, self.b3 = nn.Conv2d(b, c, 3, padding=1), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(x.mean((2, 3)))


class Residual(nn.Module):
    """A residual block: the stem group s (6) is shared by c1, the add and fc; the inner group i (5) couples s."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.ca, self.ba = nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
        self.cb, self.bb = nn.Conv2d(5, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        s = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.ba(self.ca(s)))
        y = torch.relu(self.bb(self.cb(y)) + s)
        return self.fc(y.mean((2, 3)))


class Depthwise(nn.Module):
    """A depthwise-separable pair (the depthwise layer's in and out are one group) plus a 4th group."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pw = nn.Conv2d(6, 5, 1)
        self.c4 = nn.Conv2d(5, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.dw(torch.relu(self.c1(x))))
        x = torch.relu(self.c4(torch.relu(self.pw(x))))
        return self.fc(x.mean((2, 3)))


EXAMPLE = torch.zeros(1, 3, 8, 8)
MODELS = {"chain": Chain, "residual": Residual, "depthwise": Depthwise}


def setup(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    graph = channel_groups(model, EXAMPLE)
    gen = torch.Generator().manual_seed(seed + 1)
    scores = {g.id: torch.rand(g.size, generator=gen) ** 2 for g in graph.prunable}
    return model, graph, scores


def independent_check(model, graph, scores, p: Plan, preds, limits):
    """Recompute the plan's objective and costs from signatures and predictors, not from the planner's tables."""
    for t, pr in preds.items():
        sigs = graph.signatures(p.widths, p.precisions_for(t))  # each target's engine runs its own precisions
        assert p.targets[t]["predicted"] == pytest.approx(pr.model_cost(sigs), rel=1e-9)
    assert p.metrics["macs"]["predicted"] == pytest.approx(sum(s.macs for s in sigs.values()))
    for m, lim in limits.items():
        got = p.targets[m[4:]]["predicted"] if m.startswith("lat:") else p.metrics[m]["predicted"]
        assert got <= lim * (1 + 1e-6)


def brute_reference(model, graph, scores, preds, budget, **kw):
    """Brute force over every assignment, with latency from ``predictor.model_cost`` on real signatures
    and the objective recomputed from the scores (only the enumeration domain comes from the planner)."""
    from edgeprune.plan import milp as pp_milp

    captured = {}
    real = pp_milp.solve

    def spy(problem, time_limit=10.0):
        captured["problem"] = problem
        return real(problem, time_limit)

    pp_milp.solve = spy
    try:
        try:
            got = plan(model, scores, budget, preds, PlanConfig(**kw), graph=graph)
        except BudgetMissed as err:
            got = err
    finally:
        pp_milp.solve = real
    problem = captured["problem"]
    precs = kw.get("precisions") or ["fp32"]
    penalty = C.quant_proxy(model, list(graph.layers), precs) if len(precs) > 1 else {}
    ids = {g.id for g in graph.groups}
    mean_total = np.mean([np.clip(v.double().numpy(), 0, None).sum() for k, v in scores.items() if k in ids])

    def evaluator(choice):
        # one channel decision for all targets, one precision per layer and target
        widths = dict(problem.fixed_widths)
        dtypes = {t: dict(problem.fixed_precisions.get(t, {})) for t in preds}
        for fi, f in enumerate(problem.factors):
            if f.kind == "group":
                widths[f.key] = f.values[choice[fi]]
            else:
                dtypes[f.target][f.key] = f.values[choice[fi]]
        sigs_t = {t: graph.signatures(widths, dtypes[t]) for t in preds}
        sigs = next(iter(sigs_t.values()))
        obj = 0.0
        for g in graph.groups:  # default weighting: the retained importance over the mean group total
            s = np.sort(np.clip(scores[g.id].double().numpy(), 0, None))[::-1] if g.id in scores else None
            obj += 1.0 if s is None else s[: widths[g.id]].sum() / mean_total
        # each target's engine pays its own bit-width cost
        obj -= sum(penalty.get(n, {}).get(d, 0.0) for dt in dtypes.values() for n, d in dt.items())
        _, totals = C.evaluate(problem, choice)
        for t, pr in preds.items():
            priced = all(math.isfinite(C.safe_cost(pr.layer_cost, s)) for s in sigs_t[t].values())
            totals[f"lat:{t}"] = pr.model_cost(sigs_t[t]) if priced else math.inf
        totals["macs"] = float(sum(s.macs for s in sigs.values()))
        return obj, totals

    best, best_obj = brute_force(problem, evaluator)
    return got, best, best_obj, problem


CASES = [
    ("chain", {"a": SynthPredictor()}, "latency=0.6x", {"granularity": 1}),
    ("chain", {"a": SynthPredictor()}, "latency=0.45x,macs=0.5x", {"granularity": 1}),
    ("chain", {"a": SynthPredictor()}, "latency=0.5x", {"granularity": 1, "precisions": ["fp32", "int8"]}),
    ("residual", {"a": SynthPredictor()}, "latency=0.55x,bytes=0.6x", {"granularity": 1, "precisions": ["fp32", "int8"]}),
    ("residual", {"a": SynthPredictor(), "b": SynthPredictor("cycles", scale=3.0, align=2, int8=0.3, salt="b")},
     "latency@a=0.7x,latency@b=0.5x", {"granularity": 1, "precisions": ["fp32", "int8"]}),
    ("depthwise", {"a": SynthPredictor()}, "latency=0.5x", {"granularity": 1}),
    ("depthwise", {"a": NoInt8Predictor(), "b": SynthPredictor("cycles", scale=2.0, salt="x")},
     "latency@a=0.6x,latency@b=0.6x,memory=0.8x", {"granularity": 2, "precisions": ["fp32", "int8"]}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_milp_agrees_with_brute_force(case):
    name, preds, budget, kw = CASES[case]
    model, graph, scores = setup(name, seed=case)
    got, best, best_obj, problem = brute_reference(model, graph, scores, preds, budget, **kw)
    assert 2 <= len([f for f in problem.factors if f.kind == "group"]) <= 4
    assert best is not None, "test case should be feasible"
    assert isinstance(got, Plan), got
    assert got.solver["status"] == "optimal"
    assert got.objective == pytest.approx(best_obj, abs=1e-7)
    independent_check(model, graph, scores, got, preds, problem.limits)


def test_tightening_budget_lowers_objective_and_meets_it():
    model, graph, scores = setup("residual")
    preds = {"a": SynthPredictor()}
    last = math.inf
    for r in (0.9, 0.7, 0.5, 0.35):
        p = plan(model, scores, f"latency=0.{int(r * 100):02d}x" if r < 1 else "latency=0.9x", preds, graph=graph, config=PlanConfig(granularity=1))
        assert p.targets["a"]["predicted"] <= p.targets["a"]["limit"] * (1 + 1e-9)
        assert p.objective <= last + 1e-12
        last = p.objective


def test_infeasible_budget_names_smallest_reachable_value():
    model, graph, scores = setup("chain")
    preds = {"cpu-x": SynthPredictor()}
    with pytest.raises(BudgetMissed) as ei:
        plan(model, scores, "latency=0.001ms", preds, graph=graph, config=PlanConfig(granularity=1))
    msg = str(ei.value)
    m = re.fullmatch(r"smallest predicted latency on cpu-x is ([0-9.e+-]+) ms, budget is 0\.001 ms", msg)
    assert m, msg
    # the reported minimum is the true minimum over all choices
    counts = {g.id: list(range(1, g.size + 1)) for g in graph.prunable}
    import itertools

    best = min(
        preds["cpu-x"].model_cost(graph.signatures(dict(zip(counts, combo))))
        for combo in itertools.product(*counts.values())
    )
    assert float(m.group(1)) == pytest.approx(best, rel=5e-3)  # printed with 3 significant digits
    assert ei.value.reachable["lat:cpu-x"] == pytest.approx(best, rel=1e-9)
    assert ei.value.exit_code == 1


def test_infeasible_cycles_and_joint_message():
    model, graph, scores = setup("chain")
    preds = {"vta": SynthPredictor("cycles", scale=100.0)}
    with pytest.raises(BudgetMissed, match=r"smallest predicted latency on vta is [0-9,]+ cycles \(simulated\), budget is 5 cycles \(simulated\)"):
        plan(model, scores, "latency=5cycles", preds, graph=graph, config=PlanConfig(granularity=1))
    with pytest.raises(BudgetMissed, match=r"smallest MACs is"):
        plan(model, scores, "macs=10", preds, graph=graph, config=PlanConfig(granularity=1))


@pytest.mark.parametrize("multiple", [2, 3])
def test_granularity_respected(multiple):
    torch.manual_seed(0)
    model = Chain(widths=(12, 9, 8)).eval()
    graph = channel_groups(model, EXAMPLE)
    scores = {g.id: torch.rand(g.size) for g in graph.prunable}
    tgt = Target("t", "ort", precisions=("fp32",), channel_multiple=multiple)
    p = plan(model, scores, "latency=0.3x", {"t": SynthPredictor()}, graph=graph, targets=[tgt])
    assert p.granularity == multiple
    for g in p.groups.values():
        assert g.kept == g.size or g.kept % multiple == 0
        assert len(g.indices) == g.kept
    # budget granularity overrides the targets'; LCM over several targets
    p2 = plan(model, scores, "latency=0.5x,granularity=4", {"t": SynthPredictor()}, graph=graph, targets=[tgt])
    assert p2.granularity == 4 and all(g.kept == g.size or g.kept % 4 == 0 for g in p2.groups.values())
    t2 = Target("u", "ort", precisions=("fp32",), channel_multiple=2)
    t3 = Target("v", "ort", precisions=("fp32",), channel_multiple=3)
    p3 = plan(model, scores, "latency=0.8x", {"u": SynthPredictor(), "v": SynthPredictor(salt="v")}, graph=graph,
              targets=[t2, t3])
    assert p3.granularity == 6


def test_multi_target_meets_every_budget():
    model, graph, scores = setup("residual")
    preds = {"cpu": SynthPredictor(), "vta": SynthPredictor("cycles", scale=5.0, align=2, int8=0.25, salt="vta")}
    dense = {t: pr.model_cost(graph.signatures()) for t, pr in preds.items()}
    budget = Budget.parse(f"latency@cpu={0.7 * dense['cpu']:.6f}ms,latency@vta={int(0.45 * dense['vta'])}cycles")
    p = plan(model, scores, budget, preds, graph=graph, config=PlanConfig(granularity=1, precisions=["fp32", "int8"]))
    cpu_sigs = graph.signatures(p.widths, p.precisions_for("cpu"))
    vta_sigs = graph.signatures(p.widths, p.precisions_for("vta"))
    assert p.precisions == p.precisions_for("cpu") and set(p.precisions_by_target) == {"cpu", "vta"}
    assert preds["cpu"].model_cost(cpu_sigs) <= 0.7 * dense["cpu"] * (1 + 1e-9)
    assert preds["vta"].model_cost(vta_sigs) <= int(0.45 * dense["vta"]) * (1 + 1e-9)
    # each single-target plan alone is at least as good, and the joint plan satisfies both
    for t, pr in preds.items():
        alone = Budget.build(latency={t: budget.latency[t]})
        single = plan(model, scores, alone, {t: pr}, graph=graph, config=PlanConfig(granularity=1, precisions=["fp32", "int8"]))
        assert single.objective >= p.objective - 1e-9


def test_ms_budget_on_a_cycles_target_uses_the_clock():
    model, graph, scores = setup("chain")
    tgt = Target("sim", "vta", precisions=("int8",), clock_mhz=100.0)
    pred = SynthPredictor("cycles", scale=100.0)
    dense = pred.model_cost(graph.signatures({}, {n: "int8" for n in graph.layers}))
    ms = 0.7 * dense / 1e5
    p = plan(model, scores, f"latency={ms}ms", {"sim": pred}, graph=graph, config=PlanConfig(granularity=1), targets=[tgt])
    assert p.allowed_precisions == ["int8"] and set(p.precisions.values()) == {"int8"}
    assert p.targets["sim"]["limit"] == pytest.approx(ms * 1e5)
    with pytest.raises(BadInput, match="no clock"):
        plan(model, scores, "latency=1ms", {"noclock": pred}, graph=graph, config=PlanConfig(granularity=1))


def test_ratio_against_a_non_fp32_dense_model_says_so():
    """ "0.5x" with int8 only is half the int8 dense model: plan() says so in one note; fp32 allowed, or ms, no note."""
    model, graph, scores = setup("chain")
    pred = SynthPredictor()
    only8 = plan(model, scores, "latency=0.6x", {"a": pred}, graph=graph, config=PlanConfig(granularity=1, precisions=["int8"]))
    assert [n for n in only8.notes if "not in fp32" in n] == [
        ("latency=0.6x on a is 0.6 x the dense model run in int8 (the widest precision allowed), not in fp32; "
        "give the limit in ms to budget against the fp32 model")]
    mixed = plan(model, scores, "latency=0.6x", {"a": pred}, graph=graph, config=PlanConfig(granularity=1, precisions=["fp32", "int8"]))
    ms = plan(model, scores, f"latency={only8.targets['a']['limit']}ms", {"a": pred}, graph=graph,
              config=PlanConfig(granularity=1, precisions=["int8"]))
    assert not [n for n in mixed.notes + ms.notes if "not in fp32" in n]
    with pytest.raises(BudgetMissed, match=r"budget is .* \(latency=0.05x on a is 0.05 x the dense model run in int8"):
        plan(model, scores, "latency=0.05x", {"a": pred}, graph=graph, config=PlanConfig(granularity=1, precisions=["int8"]))


def test_ratio_resolves_against_given_dense_cost():
    model, graph, scores = setup("chain")
    pred = SynthPredictor()
    p = plan(model, scores, "latency=0.5x", {"a": pred}, graph=graph, config=PlanConfig(granularity=1), dense_costs={"a": 2.0})
    assert p.targets["a"]["limit"] == pytest.approx(1.0)
    assert p.targets["a"]["dense_source"] == "measured"


def test_unpriced_choices_are_excluded():
    model, graph, scores = setup("depthwise")
    p = plan(model, scores, "latency=0.4x", {"a": NoInt8Predictor()}, graph=graph, config=PlanConfig(granularity=1, precisions=["fp32", "int8"]))
    for name, prec in p.precisions.items():
        if prec == "int8":
            assert p.layers[name]["out_channels"] >= 4


def test_freeze_respected():
    model, graph, scores = setup("chain")
    p = plan(model, scores, "latency=0.85x", {"a": SynthPredictor()}, graph=graph, config=PlanConfig(granularity=1, freeze=["c2"]))
    # c2's in-group (c1) and out-group (c2) stay whole
    assert p.groups["c1"].kept == p.groups["c1"].size and p.groups["c1"].frozen
    assert p.groups["c2"].kept == p.groups["c2"].size and p.groups["c2"].frozen
    assert p.groups["c3"].kept < p.groups["c3"].size
    with pytest.raises(BadInput, match="matches no layer"):
        plan(model, scores, "latency=0.5x", {"a": SynthPredictor()}, graph=graph, config=PlanConfig(freeze=["nope*"]))


def test_plan_json_round_trip_and_apply(tmp_path):
    model, graph, scores = setup("residual")
    p = plan(model, scores, "latency=0.6x,bytes=0.8x", {"a": SynthPredictor()}, graph=graph,
             config=PlanConfig(granularity=1, precisions=["fp32", "int8"]))
    path = p.save(tmp_path / "plan.json")
    raw = json.loads(path.read_text())
    assert raw["schema"] == "edgeprune-plan" and raw["version"] == 1
    assert raw["solver"]["wall_s"] > 0 and raw["solver"]["status"] == "optimal"
    q = Plan.load(path)
    assert q == p
    assert Plan.from_json(p.to_json()) == p
    bad = dict(raw, version=99)
    with pytest.raises(BadInput, match="version 99"):
        Plan.from_json(bad)
    with pytest.raises(BadInput, match="not an edgeprune plan"):
        Plan.from_json({"schema": "x"})
    assert p.summary_rows() and p.budget_rows()
    # the pruned model has exactly the predicted MACs and bytes
    small = apply(model, p, EXAMPLE)
    assert small(EXAMPLE).shape == (1, 3)
    assert count_macs(small, EXAMPLE) == p.metrics["macs"]["predicted"]
    bits = {n: C.WEIGHT_BITS[d] for n, d in p.precisions.items()}
    assert model_bytes(small, bits) == p.metrics["model_bytes"]["predicted"]
    assert model_bytes(small, bits) <= 0.8 * model_bytes(model) + 1e-6
    assert small.edgeprune_precisions == p.precisions
    for gid, g in p.groups.items():
        assert g.indices == (C.top_indices(scores[gid], g.kept) if gid in scores else list(range(g.size)))


def test_apply_refuses_a_plan_for_another_model():
    model, graph, scores = setup("chain")
    p = plan(model, scores, "latency=0.6x", {"a": SynthPredictor()}, graph=graph, config=PlanConfig(granularity=1))
    with pytest.raises(BadInput, match="another model"):
        apply(Chain(widths=(8, 5, 4)).eval(), p, EXAMPLE)


def test_bad_scores_and_budget_targets():
    model, graph, scores = setup("chain")
    with pytest.raises(BadInput, match="shape"):
        plan(model, {"c1": torch.ones(3)}, "latency=0.5x", {"a": SynthPredictor()}, graph=graph)
    with pytest.raises(BadInput, match="no profile"):
        plan(model, scores, "latency@zzz=0.5x", {"a": SynthPredictor()}, graph=graph)
    # targets that share no precision: each runs its own (fp32 on p, int8 on q), the channels are one decision
    p = plan(model, scores, "latency=0.5x", {"p": SynthPredictor(), "q": SynthPredictor()}, graph=graph,
             targets=[Target("p", "ort", precisions=("fp32",)), Target("q", "vta", precisions=("int8",))])
    assert set(p.precisions_for("p").values()) == {"fp32"} and set(p.precisions_for("q").values()) == {"int8"}
    with pytest.raises(BadInput, match="runs none of the precisions asked"):
        plan(model, scores, "latency=0.5x", {"q": SynthPredictor()}, PlanConfig(precisions=["fp32"]), graph=graph,
             targets=[Target("q", "vta", precisions=("int8",))])


def test_schedules():
    model, graph, scores = setup("chain")
    pred = {"a": SynthPredictor()}
    dense = pred["a"].model_cost(graph.signatures())
    resolved = Budget.parse("latency=0.4x").resolve(DenseContext(model, graph.signatures(), pred), ["a"])
    lims = [b.target("a").limit for b in step_limits(resolved, 3)]
    assert lims[0] > lims[1] > lims[2] == pytest.approx(0.4 * dense)
    calls = []

    def rescore(m):
        g = channel_groups(m, EXAMPLE)
        return {x.id: torch.linspace(1, 2, x.size) for x in g.prunable}

    def finetune(m, step):
        calls.append(step)
        return m

    res = iterative(model, "latency=0.4x", pred, rescore=rescore, finetune=finetune, steps=3, example=EXAMPLE,
                    config=PlanConfig(granularity=1))
    assert calls == [1, 2, 3] and len(res.plans) == 3
    final = channel_groups(res.model, EXAMPLE).signatures(dtypes=res.plan.precisions)
    assert pred["a"].model_cost(final) <= 0.4 * dense * (1 + 1e-9)
    composed = res.composed_plan()
    for g in composed.groups.values():
        assert len(g.indices) == g.kept and max(g.indices) < g.size
    # the composed plan applied to the original model gives the same architecture
    again = apply(model, composed, EXAMPLE)
    assert [p.shape for p in again.parameters()] == [p.shape for p in res.model.parameters()]
    one = one_shot(model, scores, "latency=0.4x", pred, example=EXAMPLE, config=PlanConfig(granularity=1))
    assert one.plan.targets["a"]["predicted"] <= 0.4 * dense * (1 + 1e-9)


def test_cli_plan(tmp_path, monkeypatch, capsys):
    import edgeprune.profile as prof
    from edgeprune.cli import main

    class FakeProfile:
        def predictor(self):
            return SynthPredictor()

    model, _graph, scores = setup("chain")
    mfile = tmp_path / "m.pt"
    torch.save(model, mfile)
    sfile = tmp_path / "s.json"
    sfile.write_text(json.dumps({k: v.tolist() for k, v in scores.items()}))
    monkeypatch.setattr(prof, "load_profile", lambda path, target=None: FakeProfile(), raising=False)
    monkeypatch.setattr(prof, "default_profile_path", lambda t, m, profiles=None, input_size=None: tmp_path / "none.json",
                        raising=False)
    monkeypatch.setattr(prof, "find_profile", lambda t, m, profiles=None, input_size=None: None, raising=False)
    monkeypatch.setattr(prof, "profile", lambda *a, **k: FakeProfile(), raising=False)
    out = tmp_path / "plan.json"
    code = main(["plan", "--model", str(mfile), "--input-shape", "1,3,8,8", "--target", "cpu-ort", "--budget",
                 "latency=0.5x,granularity=1", "--scores", str(sfile), "--out", str(out), "--json", "-q"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["solver"]["wall_s"] > 0 and res["targets"]["cpu-ort"]["predicted"] <= res["targets"]["cpu-ort"]["limit"]
    assert Plan.load(out).widths == {k: v["kept"] for k, v in res["groups"].items()}
    assert res["solver"]["weighting"] == "importance"
    code = main(["plan", "--model", str(mfile), "--input-shape", "1,3,8,8", "--target", "cpu-ort", "--budget",
                 "latency=0.5x,granularity=1", "--scores", str(sfile), "--weighting", "uniform", "--max-prune", "0.25",
                 "--json", "-q"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["solver"]["weighting"] == "uniform" and res["solver"]["max_prune"] == 0.25
    assert all(g["kept"] >= 0.75 * g["size"] for g in res["groups"].values())
    code = main(["plan", "--model", str(mfile), "--input-shape", "1,3,8,8", "--target", "cpu-ort", "--budget",
                 "latency=0.0001ms", "--scores", str(sfile), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "smallest predicted latency on cpu-ort is" in err and err.count("\n") == 1


def test_resnet56_channels_and_int8_solves_exactly():
    """The real graph (30 coupled groups, 56 layers) at the cpu-ort granularity, with int8: optimal and within budget
    (two targets: benchmarks/planner_speed.py)."""
    from edgeprune.models import load_model

    model = load_model("resnet56-cifar10")
    graph = channel_groups(model, torch.zeros(1, 3, 32, 32))
    gen = torch.Generator().manual_seed(0)
    scores = {g.id: torch.rand(g.size, generator=gen) for g in graph.prunable}
    preds = {"a": SynthPredictor(scale=1e-7, align=8)}
    p = plan(model, scores, "latency=0.5x", preds, graph=graph,
             config=PlanConfig(granularity=8, precisions=["fp32", "int8"], time_limit=60))
    assert p.solver["status"] == "optimal"
    sigs = graph.signatures(p.widths, p.precisions)
    for t, pr in preds.items():
        assert pr.model_cost(sigs) <= p.targets[t]["limit"] * (1 + 1e-6)
    assert all(g.kept % 8 == 0 or g.kept == g.size for g in p.groups.values())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_group_weights_for():
    from edgeprune.plan.plan import group_weights_for

    scores = {"a": torch.tensor([3.0, 1.0, -5.0]), "b": torch.tensor([1.0, 1.0]), "c": torch.zeros(4)}
    w = group_weights_for(scores)
    assert w == pytest.approx({"a": 4 / 2, "b": 2 / 2, "c": 0.0})  # positive totals 4, 2, 0 over their mean 2
    assert sum(w.values()) / len(w) == pytest.approx(1.0)
    assert group_weights_for(scores, "uniform") == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert group_weights_for({"a": torch.zeros(3)}) == {"a": 1.0}  # nothing positive: no basis to weigh by
    with pytest.raises(BadInput, match="unknown weighting 'share'"):
        group_weights_for(scores, "share")


def test_importance_weighting_keeps_the_group_that_matters_more():
    """Two groups with the same share curve: "uniform" sees them alike, "importance" keeps more of the one
    whose channels carry 50x the importance (the residual-stream case of docs/plan.md)."""
    model, graph, scores = setup("chain", seed=3)
    ids = [g.id for g in graph.prunable]
    boosted = max(ids, key=lambda gid: graph.group(gid).size)
    scores[boosted] = scores[boosted] * 50.0
    preds = {"a": SynthPredictor()}
    imp = plan(model, scores, "latency=0.5x", preds, PlanConfig(granularity=1), graph=graph)
    uni = plan(model, scores, "latency=0.5x", preds, PlanConfig(granularity=1, weighting="uniform"), graph=graph)
    assert imp.solver["weighting"] == "importance" and uni.solver["weighting"] == "uniform"
    assert imp.groups[boosted].kept > uni.groups[boosted].kept
    given = plan(model, scores, "latency=0.5x", preds, PlanConfig(granularity=1, group_weights={gid: 1.0 for gid in ids}),
                 graph=graph)
    assert given.solver["weighting"] == "given" and given.widths == uni.widths


def test_max_prune_floors_every_group():
    model, graph, scores = setup("residual", seed=2)
    preds = {"a": SynthPredictor()}
    free = plan(model, scores, "latency=0.5x", preds, graph=graph, config=PlanConfig(granularity=1))
    floored = plan(model, scores, "latency=0.5x", preds, graph=graph, config=PlanConfig(granularity=1, max_prune=0.5))
    assert any(g.kept < 0.5 * g.size for g in free.groups.values()), "case should prune some group past half"
    assert all(g.kept >= 0.5 * g.size for g in floored.groups.values())
    assert floored.solver["max_prune"] == 0.5 and floored.objective <= free.objective + 1e-9
    with pytest.raises(BadInput, match="max_prune must be in"):
        plan(model, scores, "latency=0.6x", preds, PlanConfig(max_prune=1.0), graph=graph)
