"""Where edgeprune keeps what it measures for a user (never inside the package or a source checkout)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: ``$EDGEPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeprune``, else ``~/.cache/edgeprune``.

    Profiles (``profiles/``), the TensorRT timing caches (``trt/``) and decoded data sets live under it.
    Nothing is created here: writers make the folders they need.
    """
    env = os.environ.get("EDGEPRUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgeprune"
