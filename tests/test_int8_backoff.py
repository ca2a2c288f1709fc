"""An int8 engine that fails verification gets its most int8-sensitive layers back in fp32 until it passes."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from edgeprune.pipeline.int8_backoff import back_off_int8
from edgeprune.quant.backoff import output_sensitivity, revert_order, revert_step
from edgeprune.ui import QUIET


def spiky_model_and_inputs() -> tuple[nn.Module, torch.Tensor]:
    """conv ``a`` sees inputs with a 1000x spike on channel 0 (its uint8 grid then loses everything else) but ignores
    that channel, so its outputs, and ``b``'s inputs, are ordinary: ``a`` is far more int8-sensitive than ``b``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[:, 0] = 0.0
    x = torch.randn(16, 3, 8, 8)
    x[:, 0, 0, 0] = 1000.0
    return model, x


def test_output_sensitivity_ranks_the_layer_int8_hurts_most_first() -> None:
    model, x = spiky_model_and_inputs()
    before = [p.clone() for p in model.parameters()]
    sens = output_sensitivity(model, x, ["0", "2", "1"])  # "1" (ReLU) has no weight: skipped
    assert set(sens) == {"0", "2"}
    assert sens["0"] > 10 * sens["2"] > 0, sens
    assert revert_order(sens) == ["0", "2"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # not modified


def test_revert_step_is_a_quarter_and_at_least_one() -> None:
    assert [revert_step(n) for n in (1, 3, 4, 5, 53)] == [1, 1, 1, 2, 14]


def test_back_off_reverts_until_the_engine_passes_and_records_the_steps() -> None:
    model, x = spiky_model_and_inputs()
    plan = {"precisions": {"0": "int8", "2": "int8"}}

    def verdict(passed: bool) -> SimpleNamespace:
        return SimpleNamespace(passed=passed, top1_agreement=None, relative_error=0.0, summary=lambda: "checked",
                               to_dict=lambda: {"passed": passed})

    run = SimpleNamespace(plan=plan, precisions=dict(plan["precisions"]), calib=x, example=x[:1], small=model,
                          ui=QUIET, verify=verdict(False))
    built: list[dict[str, str]] = []

    def rebuild(r) -> None:
        built.append(dict(r.plan["precisions"]))

    def reverify(r) -> None:  # passes once the spiky layer is fp32
        r.verify = verdict(r.plan["precisions"]["0"] == "fp32")

    back_off_int8(run, rebuild, reverify)
    assert built == [{"0": "fp32", "2": "int8"}]  # the sensitive layer first, one rebuild, the other stays int8
    rec = plan["int8_backoff"]
    assert rec["passed"] and rec["steps"][0]["to_fp32"] == ["0"] and rec["steps"][0]["int8_left"] == 1
    assert rec["first_check"] == {"passed": False}
