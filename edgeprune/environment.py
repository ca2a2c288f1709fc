"""Facts about this machine and software, recorded next to every figure (reports, profiles, benchmarks)."""
from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIGURE_PACKAGES = ("edgeprune", "torch", "onnx", "onnxruntime", "numpy", "scipy", "torch-pruning")


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


def figure_packages() -> tuple[str, ...]:
    """:data:`FIGURE_PACKAGES` plus each backend's runtime packages (``Backend.packages``)."""
    from edgeprune.backends import backend_names, get_backend

    extra = [p for n in backend_names() for p in get_backend(n).packages]
    return tuple(dict.fromkeys([*FIGURE_PACKAGES, *extra]))


def versions(packages: Sequence[str] | None = None) -> dict[str, str]:
    """Installed versions of ``packages`` (default :func:`figure_packages`; missing ones are left out)."""
    import importlib.metadata as md

    if packages is None:
        packages = figure_packages()
    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
