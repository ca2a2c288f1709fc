"""Targets and budgets."""
from __future__ import annotations

import pytest

from edgeprune.config import Budget, Limit, get_target, list_targets, load_target
from edgeprune.errors import BadInput


def test_cpu_ort_target_loads() -> None:
    t = get_target("cpu-ort")
    assert t.backend == "ort" and t.threads >= 1 and "fp32" in t.precisions
    assert t.availability()[0]


def test_every_target_file_loads() -> None:
    targets = list_targets()
    assert "cpu-ort" in {t.name for t in targets}
    for t in targets:
        ok, reason = t.availability()
        assert ok or reason, f"{t.name}: unavailable without a reason"


@pytest.mark.parametrize(
    "text, check",
    [
        ("latency=0.6x", lambda b: b.latency["*"] == Limit(0.6, "ratio")),
        ("latency=1.2ms", lambda b: b.latency["*"] == Limit(1.2, "ms")),
        ("latency=800us", lambda b: abs(b.latency["*"].value - 0.8) < 1e-12),
        ("latency@vta-pynq=40000cycles", lambda b: b.latency["vta-pynq"] == Limit(40000, "cycles")),
        ("bytes=2MB,macs=20M", lambda b: b.model_bytes == Limit(2e6, "bytes") and b.macs == Limit(2e7, "count")),
        ("latency=0.5x, granularity=16", lambda b: b.granularity == 16),
        ("macs=50%", lambda b: b.macs == Limit(0.5, "ratio")),
    ],
)
def test_budget_parse(text: str, check) -> None:
    assert check(Budget.parse(text))


@pytest.mark.parametrize(
    "text",
    ["", "latency", "latency=fast", "latency=-1ms", "latency=0", "speed=2x", "bytes=3cycles", "latency=1.5x",
     "granularity=0", "bytes@cpu-ort=1MB", "latency=1parsec"],
)
def test_budget_parse_rejects(text: str) -> None:
    with pytest.raises(BadInput):
        Budget.parse(text)


def test_budget_roundtrip_string() -> None:
    b = Budget.parse("latency=0.6x,latency@vta-pynq=40000cycles,bytes=2MB")
    assert Budget.parse(str(b)) == b


@pytest.mark.parametrize(
    "body, message",
    [
        ("name = 'x'\nbackend = ", "malformed"),
        ("backend = 'ort'", "missing key 'name'"),
        ("name = 'x'\nbackend = 'cuda'", "unknown backend"),
        ("name = 'x'\nbackend = 'ort'\nthreads = 'two'", "must be int"),
        ("name = 'x'\nbackend = 'ort'\ncolour = 'red'", "unknown key"),
        ("name = 'x'\nbackend = 'ort'\nhost = 'ssh://pi'", "host must be"),
        ("name = 'x'\nbackend = 'ort'\nprecisions = ['int3']", "unknown precision"),
    ],
)
def test_bad_target_files(tmp_path, body: str, message: str) -> None:
    f = tmp_path / "t.toml"
    f.write_text(body)
    with pytest.raises(BadInput, match=message):
        load_target(f)


def test_unknown_target_lists_known() -> None:
    with pytest.raises(BadInput, match="cpu-ort"):
        get_target("no-such-board")
