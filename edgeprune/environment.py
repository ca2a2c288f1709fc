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


ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
             "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")
"""CPU features that change which kernels a runtime picks (x86 and Arm names as /proc/cpuinfo spells them)."""


def isa_flags() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU reports, in that order."""
    words = set()
    for line in _cpuinfo().splitlines():
        if line.lower().startswith(("flags", "features")):
            words.update(line.split(":", 1)[1].split())
    return [f for f in ISA_FLAGS if f in words]


def isa_family(flags: Sequence[str]) -> str:
    """A coarse kernel family from ISA flags: two machines of one family run the same kernels, at other speeds."""
    have = set(flags)
    if {"amx_int8", "amx_tile"} <= have:
        return "x86-amx"
    if "avx512_vnni" in have:
        return "x86-avx512vnni"
    if "avx512f" in have:
        return "x86-avx512"
    if "avx2" in have:
        return "x86-avx2"
    if "asimddp" in have:
        return "arm-dotprod"
    if "asimd" in have:
        return "arm-neon"
    return platform.machine() or "unknown"


def device_fingerprint(target: Any) -> dict[str, Any]:
    """What a latency measurement on ``target`` depends on: CPU model, ISA flags, cores, threads, runtime + version.

    Recorded in every profile / device model; :func:`fingerprint_mismatch` compares two. For a remote target
    (``rpc://``) the CPU fields describe this host, not the board, and ``host`` names the board's key.
    """
    from edgeprune.backends import get_backend

    backend = get_backend(target.backend)
    flags = isa_flags()
    return {
        "target": target.name,
        "backend": target.backend,
        "host": target.host,
        "cpu": cpu_model(),
        "isa": flags,
        "isa_family": isa_family(flags),
        "cores": os.cpu_count(),
        "threads": target.threads,
        "runtime": {p: v for p, v in versions(backend.packages).items()},
    }


def fingerprint_mismatch(stored: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """The fields on which two fingerprints differ, each as ``"field: stored -> here"`` (empty when they match).

    ``cores`` and ``isa_family`` are recorded, not compared: ``threads`` fixes the work, and the family is what
    ``--recalibrate`` checks before it keeps a kernel model measured on another CPU of the same family.
    """
    out = []
    for key in ("target", "backend", "host", "cpu", "isa", "threads", "runtime"):
        if key in stored and stored.get(key) != here.get(key):
            out.append(f"{key}: {stored.get(key)} -> {here.get(key)}")
    return out


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


def cores_busy_elsewhere(interval: float = 0.3) -> float | None:
    """How many cores other processes kept busy over ``interval`` seconds: the machine's busy CPU time
    (``/proc/stat``) less this process's own, per second. None where ``/proc/stat`` is absent (not Linux)."""
    import time

    def busy_seconds() -> float:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")

    try:
        b0, p0, t0 = busy_seconds(), time.process_time(), time.perf_counter()
        time.sleep(interval)
        b1, p1, t1 = busy_seconds(), time.process_time(), time.perf_counter()
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, ((b1 - b0) - (p1 - p0)) / max(t1 - t0, 1e-9))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_threads(wanted: int, interval: float = 0.3) -> tuple[int, float | None]:
    """``wanted`` intra-op threads, fewer when other processes keep cores busy: (threads, cores busy elsewhere).

    torch's OpenMP threads wait on each other at every op: with more threads than free cores a
    training step ran ~10x slower here (2 threads on a 2-core machine beside one busy process).
    """
    busy = cores_busy_elsewhere(interval)
    if busy is None or busy < 0.5:
        return wanted, busy
    return max(1, min(wanted, usable_cores() - round(busy))), busy
