"""VTA simulator: bit-exactness against the numpy int8 reference, deadlock freedom, costs, the FPGA build."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgeprune.graph.signature import LayerSignature
from edgeprune.models.cifar_resnet import CifarResNet
from edgeprune.vta import (
    DoesNotFit,
    VTAConfig,
    build,
    compile_qnet,
    layer_cycles,
    quantize_model,
    reference_forward,
    run_program,
    simulate_timing,
)
from edgeprune.vta.program import run_layer
from edgeprune.vta.quantize import QLayer, reference_layer

PYNQ = VTAConfig.preset("pynq")
# tiny SRAMs force tiling over channels, rows and columns, and edge tiles
TINY = VTAConfig(LOG_INP_BUFF_SIZE=11, LOG_WGT_BUFF_SIZE=14, LOG_ACC_BUFF_SIZE=12, LOG_UOP_BUFF_SIZE=13)


@pytest.fixture(scope="module")
def resnet20():
    from edgeprune.data import load_data
    from edgeprune.models import load_model

    data = load_data("cifar10-demo")
    model = load_model("resnet20-cifar10")
    qnet = quantize_model(model, data.train.example(8))
    return model, data, qnet, compile_qnet(qnet, PYNQ)


def _small_pruned_model(seed: int = 0) -> CifarResNet:
    """A ResNet-8 with 5/10/20 channels (not multiples of 16) and random weights and BN statistics."""
    torch.manual_seed(seed)
    model = CifarResNet(1, width=5)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _random_layer(rng: np.random.Generator, cin: int, cout: int, k: int, stride: int, relu: bool,
                  residual: bool, per_channel: bool) -> QLayer:
    shift = rng.integers(0, 12, cout) if per_channel else np.full(cout, int(rng.integers(0, 12)))
    res_shift = rng.integers(-4, 5, cout) if per_channel else np.full(cout, int(rng.integers(-4, 5)))
    return QLayer("rand", "conv", rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8),
                  rng.integers(-5000, 5000, cout).astype(np.int32), shift.astype(np.int32), (stride, stride),
                  (k // 2, k // 2), relu, "x", "y", "r" if residual else None,
                  res_shift.astype(np.int32) if residual else None)


@settings(max_examples=12, deadline=None)
@given(cin=st.integers(1, 40), cout=st.integers(1, 40), hw=st.integers(1, 11), k=st.sampled_from([1, 3]),
       stride=st.sampled_from([1, 2]), relu=st.booleans(), residual=st.booleans(), per_channel=st.booleans(),
       tiny=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_bit_exact_random_shapes(cin, cout, hw, k, stride, relu, residual, per_channel, tiny, seed) -> None:
    rng = np.random.default_rng(seed)
    layer = _random_layer(rng, cin, cout, k, stride, relu, residual, per_channel)
    x = rng.integers(-128, 128, (1, cin, hw, hw)).astype(np.int8)
    oh = (hw + 2 * (k // 2) - k) // stride + 1
    res = rng.integers(-128, 128, (1, cout, oh, oh)).astype(np.int8) if residual else None
    try:
        got, _kernel, _ = run_layer(layer, x, res, TINY if tiny else PYNQ)
    except DoesNotFit:
        assume(False)
    np.testing.assert_array_equal(got, reference_layer(layer, x, res))


def test_every_resnet20_layer_runs_without_deadlock(resnet20) -> None:
    _, _, _qnet, program = resnet20
    assert len(program.kernels) == 22  # 19 convs, 2 shortcut selections, 1 dense
    for k in program.kernels:
        tr = simulate_timing(k.insns, PYNQ)  # raises Deadlock on a token mismatch
        assert tr.cycles > 0 and tr.gemm_ops > 0
        assert (tr.end >= 0).all()


def test_resnet20_bit_exact_whole_network_and_roofline(resnet20) -> None:
    _, data, qnet, program = resnet20
    x = data.test.example(1)
    sim = run_program(program, x)  # also checks the overlapped schedule for SRAM hazards
    ref = reference_forward(qnet, x)
    for name in ref:
        np.testing.assert_array_equal(sim[name], ref[name], err_msg=name)
    from edgeprune.vta import program_report

    report = program_report(program)
    for layer in report["layers"]:
        chk = layer["roofline_check"]
        assert chk["ratio"] >= 1.0
        assert chk["within_2x"] or chk["reason"]


def test_small_pruned_network_bit_exact() -> None:
    model = _small_pruned_model()
    calib = torch.randn(4, 3, 32, 32)
    for per_channel in (True, False):
        qnet = quantize_model(model, calib, per_channel=per_channel)
        program = compile_qnet(qnet, PYNQ)
        x = torch.randn(1, 3, 32, 32)
        sim = run_program(program, x)
        ref = reference_forward(qnet, x)
        np.testing.assert_array_equal(sim["logits"], ref["logits"])
        for name in ref:
            np.testing.assert_array_equal(sim[name], ref[name], err_msg=name)


def test_cycles_rise_when_channels_stop_being_multiples_of_16() -> None:
    def cycles(cin: int, cout: int, board: str = "pynq") -> int:
        sig = LayerSignature("conv2d", cin, cout, (3, 3), (1, 1), (1, 1), 1, (16, 16), "int8", "bn+relu")
        r = layer_cycles(sig, VTAConfig.preset(board))
        assert r["fits"] and r["time_ms"] > 0 and r["dram_bytes"] > 0
        return r["cycles"]

    assert cycles(32, 32) < cycles(33, 32) < cycles(48, 48) * 1.01
    assert cycles(32, 32) < cycles(32, 33)
    assert cycles(31, 32) == cycles(32, 32)  # padding to 16 costs what 32 costs
    assert cycles(32, 32, "ultra96") < cycles(32, 32, "pynq") * 1.01
    lin = layer_cycles(LayerSignature("linear", 64, 10, dtype="int8"), PYNQ)
    assert lin["fits"] and lin["cycles"] > 0


def test_layer_that_cannot_fit_raises_one_line_error(tmp_path: Path) -> None:
    sig = LayerSignature("conv2d", 2048, 64, (3, 3), (1, 1), (1, 1), 1, (8, 8), "int8", "bn+relu")
    r = layer_cycles(sig, PYNQ)
    assert r["fits"] is False and "does not fit" in r["reason"]
    small = VTAConfig(LOG_WGT_BUFF_SIZE=10)  # 4 weight entries: a 3x3 tap set cannot fit
    model = _small_pruned_model()
    with pytest.raises(DoesNotFit) as err:
        build(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32), small, tmp_path)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)


def test_build_writes_stream_weights_and_report(tmp_path: Path) -> None:
    model = _small_pruned_model(1)
    report = build(model, torch.randn(1, 3, 32, 32), torch.randn(4, 3, 32, 32), VTAConfig.preset("ultra96"), tmp_path)
    out = tmp_path / "vta"
    for name in ("program.bin", "program.lst", "weights.bin", "report.json"):
        assert (out / name).stat().st_size > 0
    assert report["verification"]["bit_exact"] and report["fits"]
    assert "not an RTL simulation" in report["what"]
    assert (out / "program.bin").stat().st_size == 16 * report["instructions"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["cycles"] == report["cycles"] > 0
    assert saved["time_ms"] == pytest.approx(report["cycles"] / 333e3, rel=1e-3)
    assert "FINISH" in (out / "program.lst").read_text()
