"""Device fingerprints: what a profile was measured on, and how two of them differ."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.config import get_target
from edgeprune.environment import device_fingerprint, fingerprint_mismatch, isa_family


def test_fingerprint_names_the_device_and_runtime():
    fp = device_fingerprint(get_target("cpu-ort"))
    assert fp["backend"] == "ort" and fp["threads"] == 1 and fp["cpu"]
    assert "onnxruntime" in fp["runtime"]
    assert fingerprint_mismatch(fp, dict(fp)) == []


def test_fingerprint_mismatch_lists_each_field():
    fp = device_fingerprint(get_target("cpu-ort"))
    other = dict(fp, cpu="Some Other CPU", threads=2, runtime={"onnxruntime": "0.1"})
    diff = fingerprint_mismatch(other, fp)
    assert [d.split(":")[0] for d in diff] == ["cpu", "threads", "runtime"]
    assert "Some Other CPU -> " in diff[0]


def test_isa_family():
    assert isa_family(["avx2", "avx512f", "avx512_vnni"]) == "x86-avx512vnni"
    assert isa_family(["avx", "avx2"]) == "x86-avx2"
    assert isa_family(["avx512f", "amx_tile", "amx_int8"]) == "x86-amx"
    assert isa_family(["asimd", "asimddp"]) == "arm-dotprod"


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc/stat")
def test_cores_busy_elsewhere_sees_another_process():
    """A spinning child process counts as (at least most of) a busy core."""
    import subprocess
    import sys
    import time

    from edgeprune.environment import cores_busy_elsewhere

    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 4: pass"])
    try:
        time.sleep(0.5)  # let it start
        assert cores_busy_elsewhere(1.0) >= 0.6
    finally:
        child.kill()
        child.wait()


def test_free_threads_leaves_the_busy_cores_alone(monkeypatch):
    from edgeprune import environment as env

    monkeypatch.setattr(env, "usable_cores", lambda: 2)
    for busy, want in ((None, 2), (0.2, 2), (0.9, 1), (1.8, 1)):
        monkeypatch.setattr(env, "cores_busy_elsewhere", lambda interval=0.3, b=busy: b)
        assert env.free_threads(2) == (want, busy)
