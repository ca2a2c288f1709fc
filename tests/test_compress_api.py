"""ep.compress with the user's own data and model shape: a (train, val) DataLoader pair, a two-headed model with
its own loss and metric, a two-input model; and the three bugs of issue #24 this part fixes (verification on
random inputs, a classifier larger than the data's classes, errors that come late)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.pipeline import CompressConfig, compress
from edgeprune.profile.timing import TimingProtocol
from tests.test_data_source import TwoInput, loaders
from tests.tiny import tiny_net

QUICK = CompressConfig(planner="uniform", epochs=0.5, batch_size=16, protocol=TimingProtocol.quick(), final_repeats=1,
                       criterion="taylor")
ROOT = Path(__file__).resolve().parents[1]


class TwoHead(nn.Module):
    """A small CNN with a classification head (3 classes) and a segmentation head (3 classes per pixel)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.cls = nn.Linear(32, 3)
        self.seg = nn.Conv2d(32, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
        return self.cls(f.mean((2, 3))), self.seg(f)


def seg_batches(n: int = 4, bs: int = 8, size: int = 12, seed: int = 0) -> list:
    """(image, (class label, per-pixel mask)) batches: the mask is the brightest channel at each pixel."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(bs, 3, size, size, generator=g)
        out.append((x, (x.mean((2, 3)).argmax(1), x.argmax(1))))
    return out


def two_head_loss(outputs, targets) -> torch.Tensor:
    """Cross-entropy on both heads."""
    (logits, seg), (y, mask) = outputs, targets
    return F.cross_entropy(logits, y) + F.cross_entropy(seg, mask)


def miou(model, batches) -> float:
    """Mean intersection-over-union of the segmentation head (higher is better)."""
    inter = torch.zeros(3)
    union = torch.zeros(3)
    for x, (_y, mask) in batches:
        pred = model(x)[1].argmax(1)
        for c in range(3):
            inter[c] += ((pred == c) & (mask == c)).sum()
            union[c] += ((pred == c) | (mask == c)).sum()
    return float((inter / union.clamp(min=1)).mean())


@pytest.mark.slow
def test_compress_a_dataloader_pair(tmp_path) -> None:
    """P3's folder loader returns (train DataLoader, val DataLoader) of (float NCHW, int label): it works end to end."""
    tr, va = loaders(n=128, size=16, classes=10)
    res = compress(tiny_net(), (tr, va), "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=QUICK)
    assert res.compressed.macs <= 0.6 * res.dense.macs and res.verify["passed"]
    assert res.verify["top1_agreement"] >= 99.0 and not res.verify["random_inputs"]
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["metric"]["name"] == "top1" and rep["eval_images"] == 64
    assert rep["compressed"]["top1"] is not None and rep["data"] == "TensorDataset"


def test_compress_a_two_headed_model_with_its_own_loss_and_metric(tmp_path) -> None:
    train, val = seg_batches(6, seed=0), seg_batches(2, seed=1)
    res = compress(TwoHead().eval(), (train, val), "cpu-ort", "macs=0.6x", loss_fn=two_head_loss, eval_fn=miou,
                   out=tmp_path / "run", config=QUICK)
    assert res.compressed.macs <= 0.6 * res.dense.macs
    v = res.verify
    assert v["passed"] and v["top1_agreement"] is None and "relative error" in v["gate"]
    assert res.dense.metric_name == "miou" and 0.0 <= res.compressed.metric <= 1.0 and res.compressed.top1 is None
    assert res.table_rows()[0][0] == "miou"
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["metric"]["name"] == "miou" and rep["metric"]["compressed"] == res.compressed.metric
    import onnx

    assert len(onnx.load(str(tmp_path / "run" / "model.onnx")).graph.output) == 2


def test_compress_a_two_input_model(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [((torch.randn(8, 3, 12, 12, generator=g), torch.randn(8, 4, generator=g)),
                torch.randint(0, 5, (8,), generator=g)) for _ in range(6)]
    example = (torch.zeros(1, 3, 12, 12), torch.zeros(1, 4))
    res = compress(TwoInput().eval(), batches, "cpu-ort", "macs=0.7x", example_inputs=example,
                   out=tmp_path / "run", config=QUICK)
    assert res.compressed.macs <= 0.7 * res.dense.macs and res.verify["passed"]
    import onnx

    assert [i.name for i in onnx.load(str(tmp_path / "run" / "model.onnx")).graph.input] == ["input0", "input1"]


def test_a_classifier_larger_than_the_data_is_refused_unless_allowed(tmp_path) -> None:
    tr, va = loaders(n=64, classes=3)
    tr.dataset.classes = va.dataset.classes = ["a", "b", "c"]  # as an ImageFolder declares them
    with pytest.raises(BadInput, match="10 outputs but the data .* has 3 classes.*--allow-head-mismatch"):
        compress(tiny_net(), (tr, va), "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=QUICK)
    assert not (tmp_path / "run").exists()
    from edgeprune.pipeline.context import check_head
    from edgeprune.ui import UI

    logs: list[str] = []

    class Log(UI):
        def log(self, msg: str) -> None:
            logs.append(msg)

    from dataclasses import replace

    from edgeprune.data.source import as_source

    check_head(as_source((tr, va)), torch.zeros(1, 10), replace(QUICK, allow_head_mismatch=True), Log(), False)
    assert any("10 outputs" in m and "3 classes" in m for m in logs)


def test_bad_api_arguments_fail_before_any_work(tmp_path) -> None:
    tr, va = loaders()
    cases = [
        ({"loss_fn": 3}, "loss_fn must be callable"),
        ({"example_inputs": "x"}, "example_inputs must be a tensor"),
        ({"example_inputs": torch.zeros(1, 3, 16, 16), "input_shape": (1, 3, 16, 16)}, "not both"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(BadInput, match=msg):
            compress(tiny_net(), (tr, va), "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=QUICK, **kwargs)
    with pytest.raises(BadInput, match="eval_fn needs data"):
        compress(tiny_net(), None, "cpu-ort", "macs=0.6x", eval_fn=miou, out=tmp_path / "run",
                 config=CompressConfig(criterion="l1"), input_shape=(1, 3, 16, 16))
    with pytest.raises(BadInput, match="one-shot generator"):
        compress(tiny_net(), (b for b in tr), "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=QUICK)
    assert not (tmp_path / "run").exists()


def test_cli_data_none_with_a_data_criterion_fails_at_once_in_a_fresh_process(tmp_path) -> None:
    """In a fresh process the criteria are not discovered yet: the check must still say "needs data", exit 2,
    and leave no output folder (it used to fail late, after the dense measurement)."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "edgeprune", "compress", "--data", "none", "--input-shape", "1,3,32,32",
                        "--criterion", "fisher", "--out", str(out)], check=False, capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2 and "needs data" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_compress_without_data_gates_verification_on_output_error(tmp_path) -> None:
    cfg = CompressConfig(planner="uniform", epochs=0, criterion="l1", protocol=TimingProtocol.quick(), final_repeats=1)
    res = compress(tiny_net(), None, "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=cfg,
                   input_shape=(1, 3, 16, 16))
    v = res.verify
    assert v["random_inputs"] and v["engine_top1"] is None and "relative error" in v["gate"] and v["passed"]
    assert res.compressed.top1 is None and res.table_rows()[0][1:3] == ("not measured", "not measured")
    text = (tmp_path / "run" / "report.json").read_text()
    assert "NaN" not in text and json.loads(text)["top1_drop"] is None
