"""VTA general CNN path: depthwise/grouped convolutions, ReLU6, fused residuals and host steps, bit-exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.vta import VTAConfig, build
from edgeprune.vta.cnn import quantize_cnn, reference_forward_cnn
from edgeprune.vta.cnn_program import compile_cnn, run_cnn_program, units

PYNQ = VTAConfig.preset("pynq")
TINY = VTAConfig(LOG_INP_BUFF_SIZE=11, LOG_WGT_BUFF_SIZE=14, LOG_ACC_BUFF_SIZE=12, LOG_UOP_BUFF_SIZE=13)


def _randomise_bn(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


class DepthwiseBlock(nn.Module):
    """Stem, an inverted-residual block (expand, depthwise, project, residual add), squeeze-excite, pool, head."""

    def __init__(self, c: int = 24, groups: int = 0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        e = 2 * c
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(e, e, 3, 1, 1, groups=groups or e, bias=False), nn.BatchNorm2d(e), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
        self.se1 = nn.Conv2d(c, 8, 1)
        self.se2 = nn.Conv2d(8, c, 1)
        self.down = nn.Conv2d(c, c, 3, 2, 1, groups=c)  # strided depthwise, no BN, ReLU
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.se2(torch.relu(self.se1(s))))
        x = x * s
        x = torch.relu(self.down(x))
        x = self.pool(x)
        x = torch.nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.head(torch.flatten(x, 1))


def _check_bit_exact(model: nn.Module, config: VTAConfig, hw: int = 8, seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    x = torch.randn(6, 3, hw, hw)
    net = quantize_cnn(model, x)
    prog = compile_cnn(net, config)
    ref = reference_forward_cnn(net, x[:1])
    sim = run_cnn_program(prog, x[:1])
    assert set(ref) <= set(sim)
    mismatched = [n for n in ref if not np.array_equal(ref[n], sim[n])]
    assert not mismatched
    return net, prog, ref


@pytest.mark.parametrize("config", [PYNQ, TINY], ids=["pynq", "tiny-sram"])
def test_depthwise_block_bit_exact(config):
    torch.manual_seed(1)
    model = _randomise_bn(DepthwiseBlock(24))
    net, prog, ref = _check_bit_exact(model, config)
    where = {s.name: s.where for s in prog.steps}
    assert where["dw_0"] == where["down"] == where["head"] == where["stem_0"] == "vta"
    assert where["sigmoid"] == where["mul"] == where["pool"] == "host"
    layer = {ly.name: ly for ly in net.layers}
    assert layer["dw_0"].groups == 48 and layer["project_0"].residual == "stem_2"
    assert len(next(s for s in prog.steps if s.name == "dw_0").kernels) == 3  # one per diagonal channel block
    assert all(s.dma_cycles > 0 for s in prog.steps if s.where == "host")
    # int8 network tracks the float model
    out = ref[net.output].astype(np.float64).ravel() * 2.0 ** -net.logits_frac
    want = model(torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))[:1]).detach().numpy().ravel()
    assert np.abs(out - want).max() < 0.25 * np.abs(want).max() + 0.05


@pytest.mark.parametrize("c,groups", [(32, 2), (24, 3), (40, 5), (24, 2)])
def test_grouped_conv_bit_exact(c, groups):
    torch.manual_seed(2)
    model = _randomise_bn(DepthwiseBlock(c, groups=groups))
    _check_bit_exact(model, PYNQ, hw=6, seed=3)


def test_units_cover_only_diagonal_blocks():
    from edgeprune.vta.quantize import QLayer

    def layer(o, i, g):
        z = np.zeros(o, np.int32)
        return QLayer("l", "conv", np.zeros((o, i, 3, 3), np.int8), z, z, (1, 1), (1, 1), True, "a", "b", groups=g)

    assert [(u.o0, u.o1, u.i0, u.i1) for u in units(layer(40, 40, 40), 16)] == [(0, 1, 0, 1), (1, 2, 1, 2), (2, 3, 2, 3)]
    assert [(u.o0, u.o1, u.i0, u.i1) for u in units(layer(64, 64, 2), 16)] == [(0, 2, 0, 2), (2, 4, 2, 4)]
    assert [(u.o0, u.o1, u.i0, u.i1) for u in units(layer(48, 48, 1), 16)] == [(0, 3, 0, 3)]
    assert [(u.o0, u.o1, u.i0, u.i1) for u in units(layer(24, 24, 3), 16)] == [(0, 1, 0, 1), (1, 2, 1, 2)]
    # groups straddling channel blocks read every input block they touch
    assert [(u.o0, u.o1, u.i0, u.i1) for u in units(layer(48, 48, 2), 16)] == [(0, 1, 0, 2), (1, 2, 0, 3), (2, 3, 1, 3)]


def test_small_mobilenet_v2_bit_exact(torchvision):
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25))
    net, _prog, _ = _check_bit_exact(model, PYNQ, hw=32)
    depthwise = [ly for ly in net.layers if ly.groups > 1]
    assert len(depthwise) == 17 and all(ly.groups == ly.out_channels for ly in depthwise)
    assert [h.name for h in net.host_ops] == ["adaptive_avg_pool2d"]
    # 10 residual adds, plus the first block's: at width 0.25 its 32*0.25 -> 8 input channels equal its output
    assert sum(ly.residual is not None for ly in net.layers) == 11


@pytest.mark.slow
def test_mobilenet_v2_build_report_and_sim_time(torchvision, tmp_path):
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.mobilenet_v2(num_classes=10))
    x = torch.randn(8, 3, 32, 32)
    report = build(model, x[:1], x, PYNQ, tmp_path)
    assert report["verification"]["bit_exact"]
    assert report["functional_sim_seconds"] <= 60
    runs = {p["runs_on"] for p in report["placement"]}
    assert runs == {"vta", "host"}
    assert report["cycles"] == report["vta_cycles"] + report["host_dma_cycles"]
    for name in ("program.bin", "program.lst", "weights.bin", "report.json"):
        assert (tmp_path / "vta" / name).stat().st_size > 0


def test_relu6_clamp_on_the_alu_bit_exact():
    from edgeprune.vta.program import run_layer
    from edgeprune.vta.quantize import QLayer, reference_layer

    rng = np.random.default_rng(5)
    layer = QLayer("r6", "conv", rng.integers(-128, 128, (20, 20, 3, 3)).astype(np.int8),
                   rng.integers(-5000, 5000, 20).astype(np.int32), rng.integers(4, 10, 20).astype(np.int32),
                   (1, 1), (1, 1), True, "x", "y", clip_hi=96, groups=1)
    x = rng.integers(-128, 128, (1, 20, 7, 7)).astype(np.int8)
    got, kernel, _ = run_layer(layer, x, None, PYNQ)
    want = reference_layer(layer, x, None)
    assert np.array_equal(got, want) and want.max() == 96 and want.min() == 0
    assert any(getattr(i, "imm", None) == 96 for i in kernel.insns)


def test_layer_cycles_prices_depthwise_as_its_diagonal_kernels():
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.vta import layer_cycles

    def sig(groups):
        return LayerSignature(op="conv2d", in_channels=64, out_channels=64, kernel=(3, 3), stride=(1, 1),
                              padding=(1, 1), groups=groups, in_hw=(8, 8), dtype="int8", post="bn+relu")

    dense, dw, dw64 = layer_cycles(sig(1), PYNQ), layer_cycles(sig(-1), PYNQ), layer_cycles(sig(64), PYNQ)
    assert dense["fits"] and dw["fits"] and dw["cycles"] == dw64["cycles"]
    assert dw["cycles"] < dense["cycles"] and dw["plan"].startswith("4 kernels")


def test_vta_backend_prices_any_cnn_as_its_build(tmp_path):
    """compress times a non-ResNet model on vta-pynq by compiling it: the backend's engine file holds the same simulated
    cycles as the full build's report."""
    from edgeprune.backends import get_backend
    from edgeprune.config import get_target
    from edgeprune.profile.timing import TimingProtocol

    torch.manual_seed(1)
    model = _randomise_bn(DepthwiseBlock(24)).eval()
    x = torch.randn(6, 3, 8, 8)
    backend, target = get_backend("vta"), get_target("vta-pynq")
    path, disabled = backend.engine_file(model, target, x[:1], None, x, tmp_path)
    timing = backend.time_onnx(path, target, TimingProtocol.quick())
    report = build(model, x[:1], x, PYNQ, tmp_path / "build", verify=False)
    assert disabled == [] and timing.unit == "cycles" and timing.median == report["cycles"] > 0
