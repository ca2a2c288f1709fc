"""Backends as plug-ins: discovered from ``edgeprune/backends/``, light to import, each with an options schema,
and no backend name compared anywhere outside ``edgeprune/backends/``."""
from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.backends import BACKENDS, Backend, backend_names, get_backend
from edgeprune.config import load_target
from edgeprune.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgeprune"
HEAVY = ("tvm", "tensorrt", "openvino", "onnxruntime", "torch")


def _comparisons(names: list[str]) -> list[re.Pattern[str]]:
    alt = "|".join(re.escape(n) for n in names)
    lit = rf"""(['"])(?:{alt})\1"""
    return [
        re.compile(rf"(?:==|!=)\s*{lit}"),  # x == "ort"
        re.compile(rf"{lit}\s*(?:==|!=)"),  # "ort" == x
        re.compile(rf"\bin\s*[(\[{{][^)\]}}]*{lit}"),  # x in ("ort", "tvm")
        re.compile(rf"{lit}\s+(?:not\s+)?in\b"),  # "vta" in target.name
        re.compile(rf"^\s*case\s+{lit}"),  # match ... case "ort":
    ]


def _offenders(files: list[Path], names: list[str], root: Path = ROOT) -> list[str]:
    pats = _comparisons(names)
    out = []
    for f in files:
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in pats):
                out.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    return out


def test_no_backend_name_is_compared_outside_backends():
    files = [f for f in PACKAGE.rglob("*.py") if (PACKAGE / "backends") not in f.parents]
    files += sorted((ROOT / "benchmarks").glob("**/*.py"))
    offenders = _offenders(files, backend_names())
    assert not offenders, "backend names compared outside edgeprune/backends/ (make it a Backend attribute):\n" + "\n".join(offenders)


def test_the_name_check_catches_each_form(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('if t.backend == "ort": pass\nif "vta" != b.name: pass\nok = t.backend in ("trt", "tvm")\n'
                   'if "vta" in t.name: pass\nmatch t.backend:\n    case "ort": pass\nfine = cfg.backend != "auto"\n')
    found = [line.split(":")[1] for line in _offenders([bad], backend_names(), tmp_path)]
    assert found == ["1", "2", "3", "4", "6"]


def test_registry_discovers_the_backends_without_a_list():
    assert {"ort", "tvm", "trt", "vta"} <= set(backend_names())
    tree = ast.parse((PACKAGE / "backends" / "__init__.py").read_text())
    doc = ast.get_docstring(tree, clean=False)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value != doc}
    assert not strings & set(backend_names()), "backends/__init__.py names backends: discovery must find them"
    assert "iter_modules" in ast.unparse(tree)
    subpackages = sorted(p.parent.name for p in (PACKAGE / "backends").glob("*/__init__.py"))
    assert subpackages == backend_names()


def test_a_new_subpackage_is_discovered(tmp_path, monkeypatch):
    from edgeprune import backends

    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from edgeprune.backends import BACKENDS, Backend\n"
        "class Toy(Backend):\n"
        "    name = 'toy'\n"
        "    def availability(self, target):\n        return True, ''\n"
        "    def time_onnx(self, onnx_path, target, protocol, disabled_optimizers=()):\n        raise NotImplementedError\n"
        "BACKENDS.register('toy')(Toy())\n"
    )
    monkeypatch.setattr(backends, "__path__", [*backends.__path__, str(tmp_path)])
    monkeypatch.setattr(BACKENDS, "_entries", dict(BACKENDS._entries))
    monkeypatch.delitem(sys.modules, "edgeprune.backends.toy", raising=False)
    try:
        assert "toy" in backend_names() and get_backend("toy").name == "toy"
    finally:
        sys.modules.pop("edgeprune.backends.toy", None)


@pytest.mark.parametrize("name", backend_names())
def test_backend_registration_is_light(name):
    code = (f"import sys, edgeprune.backends.{name} as m; from edgeprune.backends import get_backend; get_backend({name!r}); "
            f"print([h for h in {HEAVY!r} if h in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert out == "[]", f"registering the {name} backend imports {out}"


@pytest.mark.parametrize("name", backend_names())
def test_backend_declares_its_interface(name):
    b = get_backend(name)
    assert isinstance(b, Backend) and b.name == name and b.unit in ("ms", "cycles")
    assert b.simulated == (b.unit == "cycles")
    assert b.options_schema is not None and dataclasses.is_dataclass(b.options_schema)
    assert type(b).emit is not Backend.emit, f"the {name} backend has no emitter"
    assert 0 < b.verify_threshold(False) <= 100 and 0 < b.verify_threshold(True) <= 100


@pytest.mark.parametrize("name", backend_names())
def test_unknown_option_is_refused_in_one_line(name, tmp_path):
    f = tmp_path / "t.toml"
    f.write_text(f"name = 'x'\nbackend = '{name}'\n\n[options]\nno_such_option = 1\n")
    with pytest.raises(BadInput) as err:
        load_target(f)
    msg = str(err.value)
    assert "\n" not in msg and "'no_such_option'" in msg
    known = [fl.name for fl in dataclasses.fields(get_backend(name).options_schema)]
    assert all(k in msg for k in known)


def test_every_shipped_target_uses_only_known_options():
    files = sorted((ROOT / "edgeprune" / "targets").glob("*.toml"))
    assert len(files) >= 9
    for f in files:
        t = load_target(f)
        known = {fl.name for fl in dataclasses.fields(get_backend(t.backend).options_schema)}
        assert set(t.options) <= known, f.name


def test_unknown_backend_lists_the_registered_ones(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("name = 'x'\nbackend = 'cuda'\n")
    with pytest.raises(BadInput, match="unknown backend 'cuda'") as err:
        load_target(f)
    assert all(n in str(err.value) for n in backend_names())
