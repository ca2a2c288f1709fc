"""Every module of the package imports with only the base install (no tvm, no tensorrt)."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import edgeprune

MODULES = sorted(m.name for m in pkgutil.walk_packages(edgeprune.__path__, "edgeprune."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_import_edgeprune_is_light() -> None:
    code = "import sys, edgeprune; heavy = [m for m in ('torch', 'onnxruntime', 'tvm', 'tensorrt', 'matplotlib') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_public_api_names_resolve() -> None:
    for name in ("load_model", "get_target", "list_targets", "compress", "Budget", "channel_groups", "prune", "importance"):
        assert callable(getattr(edgeprune, name))


def test_commands_do_not_import_the_cli() -> None:
    """cli.py imports the command modules; none of them imports back into it (shared bits: commands/options.py)."""
    from pathlib import Path

    folder = Path(edgeprune.__file__).parent / "commands"
    back = [f.name for f in sorted(folder.glob("*.py")) if "edgeprune.cli" in f.read_text(encoding="utf-8")]
    assert back == []


def test_targets_do_not_import_torch() -> None:
    """Listing targets (and their availability) stays light: `edgeprune targets` <= 2 s (benchmarks/startup_speed.py)."""
    code = ("import sys; from edgeprune.config import list_targets; [t.availability() for t in list_targets()]; "
            "print([m for m in ('torch', 'tvm', 'tensorrt', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    import importlib.util
    import shutil

    if importlib.util.find_spec("tvm_ffi") is not None and shutil.which("nvcc"):
        # whether this TVM can build CUDA (the jetson-orin-tvm target) is asked of tvm_ffi, which imports torch
        assert out in ("[]", "['torch']"), out
    else:
        assert out == "[]"


def test_lazy_vta_names() -> None:
    code = ("import types; from edgeprune.vta import layer_cycles; from edgeprune.vta import build, VTAConfig; "
            "assert callable(build) and not isinstance(build, types.ModuleType); "
            "from edgeprune.graph import channel_groups, LayerSignature; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "ok"
