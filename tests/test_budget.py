"""Budgets: the metric registry (every metric parses, resolves, predicts and prints), Budget.resolve, Limits."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgeprune.budget import Budget, DenseContext, Limit, Limits, Metric, get_metric, metrics, register_metric
from edgeprune.config import Target
from edgeprune.errors import BadInput
from edgeprune.graph import channel_groups
from edgeprune.metrics import count_macs, model_bytes


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.b1(self.c1(x)))))
        return self.fc(x.mean((2, 3)))


class LinearPredictor:
    """Cost = scale x MACs per layer + offset, in ``unit``."""

    def __init__(self, unit: str = "ms", scale: float = 1e-6, offset: float = 0.1) -> None:
        self.unit, self.scale, self.offset = unit, scale, offset

    def layer_cost(self, sig) -> float:
        return sig.macs * self.scale

    def model_cost(self, sigs) -> float:
        return sum(self.layer_cost(s) for s in sigs.values()) + self.offset


EXAMPLE = torch.zeros(1, 3, 8, 8)


@pytest.fixture(scope="module")
def ctx():
    torch.manual_seed(0)
    model = Tiny().eval()
    graph = channel_groups(model, EXAMPLE)
    preds = {"cpu": LinearPredictor(), "vta": LinearPredictor("cycles", scale=1.0, offset=100.0)}
    return model, graph, DenseContext(model, graph.signatures(), preds)


# one row per registered metric: (budget text, target or None, the dense value's reference, an absolute budget text)
CASES = {
    "latency": ("latency@cpu=0.5x", "cpu", lambda m, g, p: p["cpu"].model_cost(g.signatures()), "latency@cpu=2ms"),
    "cycles": ("latency@vta=0.5x", "vta", lambda m, g, p: p["vta"].model_cost(g.signatures()), "latency@vta=400cycles"),
    "model_bytes": ("bytes=0.5x", None, lambda m, g, p: model_bytes(m), "bytes=1kB"),
    "macs": ("macs=50%", None, lambda m, g, p: count_macs(m, EXAMPLE), "macs=20k"),
    "peak_memory": ("memory=0.5x", None, lambda m, g, p: max(s.in_channels * s.in_hw[0] * s.in_hw[1] * 4
                                                              + s.out_channels * s.out_hw[0] * s.out_hw[1] * 4
                                                              for s in g.signatures().values()), "memory=1KiB"),
}


def test_every_metric_is_covered():
    assert set(metrics()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_metric_parse_resolve_predict_print(name, ctx):
    model, graph, dense = ctx
    text, target, reference, absolute = CASES[name]
    metric = get_metric(name)
    # parse: the ratio text lands on this metric (a latency ratio on a cycles target resolves as cycles)
    b = Budget.parse(text)
    lim = b.latency_for(target) if target else b.get(name)
    assert lim == Limit(0.5, "ratio")
    # resolve against the dense value
    limits = b.resolve(dense, ["cpu", "vta"])
    key = f"lat:{target}" if target else name
    e = limits[key]
    assert e.metric == name
    assert e.dense == pytest.approx(reference(model, graph, dense.predictors))
    assert e.limit == pytest.approx(0.5 * e.dense)
    # an absolute limit is taken as written, in the metric's unit
    a = Budget.parse(absolute).resolve(dense, ["cpu", "vta"])[key]
    assert a.limit is not None and a.limit > 0 and a.unit == metric.unit
    # predict: the layers' costs give back the dense value (sum, or max for peak memory)
    pred = dense.predictors.get(target)
    per_layer = [metric.layer_cost(s, pred) for s in graph.signatures().values()]
    if metric.reduce == "max":
        assert max(per_layer) == pytest.approx(e.dense)
    elif name == "model_bytes":  # weights only: biases and norm parameters are counted per group by the planner
        assert 0 < sum(per_layer) <= e.dense
    else:
        base = pred.model_cost({}) if pred is not None else 0.0
        assert sum(per_layer) + base == pytest.approx(e.dense)
    # print
    text_value = metric.format_value(e.dense)
    assert text_value and "unreachable" not in text_value
    assert metric.format_value(math.inf) == "unreachable"
    if name == "cycles":
        assert "simulated" in text_value


def test_resolve_uses_measured_dense_and_converts_with_the_clock(ctx):
    model, _, dense = ctx
    measured = DenseContext(model, dense.signatures, dense.predictors, measured={"cpu": 4.0})
    lim = Budget.parse("latency=0.25x").resolve(measured, ["cpu", "vta"])
    assert lim.target("cpu").limit == pytest.approx(1.0) and lim.target("cpu").dense_source == "measured"
    assert lim.target("vta").dense_source == "predicted" and lim.target("vta").metric == "cycles"
    vta = Target("vta", "vta", precisions=("int8",), clock_mhz=100.0)
    got = Budget.parse("latency@vta=2ms").resolve(dense, {"cpu": None, "vta": vta})
    assert got.target("vta").limit == pytest.approx(2e5)  # 2 ms at 100 MHz
    with pytest.raises(BadInput, match="no clock_mhz"):
        Budget.parse("latency@vta=2ms").resolve(dense, ["cpu", "vta"])
    with pytest.raises(BadInput, match="no profile"):
        Budget.parse("latency@gpu=0.5x").resolve(dense, ["cpu", "vta"])


def test_limits_step_rebase_and_limited(ctx):
    _, _, dense = ctx
    lim = Budget.parse("latency@cpu=0.4x,macs=0.5x").resolve(dense, ["cpu", "vta"])
    assert set(lim.limited()) == {"lat:cpu", "macs"}
    assert lim.targets == ["cpu", "vta"]
    steps = [lim.step(t, 3) for t in (1, 2, 3)]
    vals = [s.target("cpu").limit for s in steps]
    assert vals[0] > vals[1] > vals[2] == pytest.approx(lim.target("cpu").limit)
    re = lim.rebased("lat:cpu", 10.0)
    assert re.target("cpu").limit == pytest.approx(4.0) and re.target("cpu").dense == 10.0
    assert lim.with_limit("macs", None).limited() == {"lat:cpu": lim.target("cpu").limit}
    assert isinstance(lim, Limits) and lim.budget == "latency@cpu=0.4x,macs=0.5x"


def test_budget_build_and_text():
    b = Budget.build(latency={"*": Limit(0.6, "ratio"), "vta": Limit(4e4, "cycles")}, model_bytes=Limit(2e6, "bytes"))
    assert b == Budget.parse("latency=0.6x,latency@vta=40000cycles,bytes=2MB")
    assert Budget.parse(str(b)) == b
    assert Budget.parse("cycles@vta=40kcycles").latency_for("vta") == Limit(4e4, "cycles")
    assert not hasattr(Budget, "of")


def test_a_new_metric_is_one_registration(ctx):
    """An energy-like metric: registered once, it parses, resolves and prints (docs/plan.md, "a new budget kind")."""
    from edgeprune.budget.metric import METRICS

    class Weights(Metric):
        name, aliases, unit, units, what = "weights", ("params",), "count", {"": 1.0, "k": 1e3}, "weights"
        default_unit = ""

        def dense(self, ctx, target=None):
            return float(sum(p.numel() for p in ctx.model.parameters()))

        def layer_cost(self, sig, predictor=None):
            return 0.0

    register_metric(Weights())
    try:
        _, _, dense = ctx
        lim = Budget.parse("params=0.5x").resolve(dense, ["cpu"])
        assert lim["weights"].limit == pytest.approx(0.5 * lim["weights"].dense)
        assert "weights" in str(Budget.parse("params=3k"))
    finally:
        METRICS.pop("weights")


def test_plan_config_validates():
    from edgeprune.plan import PlanConfig

    assert PlanConfig().time_limit == 10.0
    with pytest.raises(BadInput, match="unknown weighting"):
        PlanConfig(weighting="share")
    with pytest.raises(BadInput, match="max_prune"):
        PlanConfig(max_prune=1.0)
    with pytest.raises(BadInput, match="granularity"):
        PlanConfig(granularity=0)


def test_no_public_plan_function_takes_more_than_nine_parameters():
    import inspect

    import edgeprune.plan.plan as plan_mod
    from edgeprune.plan import choices, costs, decode

    for mod in (plan_mod, choices, costs, decode):
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__ and not name.startswith("_"):
                assert len(inspect.signature(fn).parameters) <= 9, f"{mod.__name__}.{name}"
