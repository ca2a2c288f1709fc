"""Facts about this machine and software, recorded next to every figure (reports, profiles, benchmarks)."""
from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIGURE_PACKAGES = ("edgeprune", "torch", "onnx", "onnxruntime", "numpy", "scipy", "torch-pruning", "apache-tvm", "tensorrt")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, vector ISA and OS of this machine."""
    txt = _cpuinfo()
    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f" {f}" in txt)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "isa": flags, "os": platform.platform(),
            "python": platform.python_version()}


def versions(packages: Sequence[str] = FIGURE_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones are left out)."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
