"""VTA ISA: binary encode/decode round-trip, micro-ops, configuration and targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.errors import BadInput
from edgeprune.vta.config import BOARDS, VTAConfig
from edgeprune.vta.isa import (
    AluInsn,
    AluOp,
    Deps,
    EncodingError,
    FinishInsn,
    GemmInsn,
    MemInsn,
    MemType,
    Opcode,
    decode,
    decode_stream,
    encode,
    encode_stream,
    format_insn,
    pack_uops,
    unpack_uops,
)

CFG = VTAConfig()
ROOT = Path(__file__).resolve().parent.parent
deps = st.builds(Deps, st.booleans(), st.booleans(), st.booleans(), st.booleans())
u = lambda bits: st.integers(0, (1 << bits) - 1)

mem = st.builds(MemInsn, st.sampled_from([Opcode.LOAD, Opcode.STORE]), st.sampled_from(list(MemType)), u(16), u(32),
                u(16), u(16), u(16), u(4), u(4), u(4), u(4), deps)
loops = {"uop_bgn": u(13), "uop_end": u(14), "iter_out": u(14), "iter_in": u(14), "dst_factor_out": u(11),
         "dst_factor_in": u(11), "src_factor_out": u(11), "src_factor_in": u(11)}
gemm = st.builds(GemmInsn, reset=st.booleans(), wgt_factor_out=u(10), wgt_factor_in=u(10), deps=deps, **loops)
alu = st.builds(AluInsn, alu_op=st.sampled_from(list(AluOp)), use_imm=st.booleans(), imm=st.integers(-(1 << 15), (1 << 15) - 1),
                deps=deps, **loops)
finish = st.builds(FinishInsn, deps)


@settings(max_examples=300, deadline=None)
@given(st.one_of(mem, gemm, alu, finish))
def test_encode_decode_round_trip(insn) -> None:
    data = encode(insn, CFG)
    assert len(data) == 16
    assert decode(data, CFG) == insn
    assert format_insn(insn)


def test_stream_round_trip_and_field_overflow() -> None:
    insns = [MemInsn(Opcode.LOAD, MemType.INP, 3, 100, 2, 4, 8, 1, 0, 1, 0, Deps(push_next=True)),
             GemmInsn(False, 0, 9, 1, 4, 0, 4, 0, 34, 0, 0, Deps(pop_prev=True)),
             AluInsn(AluOp.SHR, True, -3, 0, 4, 1, 4, 0, 4, 0, 0), FinishInsn(Deps(pop_next=True))]
    assert decode_stream(encode_stream(insns, CFG), CFG) == insns
    with pytest.raises(EncodingError):
        encode(MemInsn(Opcode.LOAD, MemType.INP, 1 << 16, 0, 1, 1, 1), CFG)


def test_uop_pack_round_trip() -> None:
    rng = np.random.default_rng(0)
    d, s, w = rng.integers(0, 2048, 100), rng.integers(0, 2048, 100), rng.integers(0, 1024, 100)
    words = pack_uops(d, s, w, CFG)
    assert words.dtype == np.uint32
    for a, b in zip(unpack_uops(words, CFG), (d, s, w)):
        assert np.array_equal(a, b)
    with pytest.raises(EncodingError):
        pack_uops([2048], [0], [0], CFG)


def test_config_sizes_presets_and_json(tmp_path: Path) -> None:
    c = VTAConfig.preset("pynq")
    assert (c.block, c.inp_depth, c.wgt_depth, c.acc_depth, c.uop_depth) == (16, 2048, 1024, 2048, 8192)
    assert (c.clock_mhz, c.axi_bytes) == (100.0, 8)
    assert (VTAConfig.preset("ultra96").clock_mhz, VTAConfig.preset("zcu104").axi_bytes) == (333.0, 16)
    assert set(BOARDS) == {"pynq", "de10nano", "ultra96", "zcu104"}
    f = tmp_path / "vta_config.json"
    f.write_text('{"TARGET": "ultra96", "HW_VER": "0.0.2", "LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3, "LOG_ACC_WIDTH": 5,'
                 ' "LOG_BATCH": 0, "LOG_BLOCK": 4, "LOG_UOP_BUFF_SIZE": 15, "LOG_INP_BUFF_SIZE": 14,'
                 ' "LOG_WGT_BUFF_SIZE": 18, "LOG_ACC_BUFF_SIZE": 17}')
    j = VTAConfig.from_json(f)
    assert j.board == "ultra96" and j.inp_depth == 1024
    with pytest.raises(BadInput):
        VTAConfig.preset("nope")
    with pytest.raises(BadInput):
        VTAConfig(LOG_INP_WIDTH=2)


def test_targets_load() -> None:
    from edgeprune.config import load_target

    for board in ("pynq", "ultra96"):
        t = load_target(ROOT / "edgeprune" / "targets" / f"vta-{board}.toml")
        assert t.backend == "vta" and t.channel_multiple == 16 and t.precisions == ("int8",)
        cfg = VTAConfig.preset(t.options["board"])
        assert cfg.clock_mhz == t.clock_mhz
