"""Shared test helpers: torchvision on the CPU torch, and the ../shared/data skip."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Each test session gets its own user cache (profiles measured or re-fitted, decoded data), inherited by the
# subprocesses tests start: what one run writes must not change the next one, nor the developer's ~/.cache.
os.environ["EDGEPRUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgeprune-test-cache-")


def import_torchvision():
    """Import torchvision's pure-Python model definitions on the CPU torch, or skip.

    The only torchvision 0.28 wheel is a CUDA build whose C++ ops do not load here;
    its fake-kernel registrations then fail with "operator torchvision::nms does not
    exist" unless the two ops are declared first (DESIGN.md): edgeprune.models.hub does
    that for ``--model torchvision:NAME``; the package never needs torchvision.
    """
    from edgeprune.errors import BadInput
    from edgeprune.models.hub import import_torchvision as load

    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (pip install --no-deps torchvision==0.28.0)")
    try:
        return load()
    except BadInput as err:  # pragma: no cover - a broken wheel
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def torchvision():
    """The torchvision module (skips the test when it is absent or broken)."""
    return import_torchvision()


def needs_shared_data(*names: str):
    """Skip unless ``../shared/data/<name>`` exists for every name."""
    missing = [n for n in names if not (SHARED_DATA / n).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"needs ../shared/data/{', '.join(missing)}")


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's user cache (see EDGEPRUNE_CACHE_DIR above)."""
    import shutil

    shutil.rmtree(os.environ["EDGEPRUNE_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: on a shared 2-core machine two threads per process oversubscribe it badly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
