"""Apache TVM (Relax), locally or on boards behind an RPC tracker: ``runtime`` (build, time, run), ``emit``
(engine modules), ``rpc`` (the tracker protocol, pure Python), ``options``. tvm is imported inside functions only."""
from __future__ import annotations

from edgeprune.backends import BACKENDS
from edgeprune.backends.tvm.runtime import TvmBackend

BACKENDS.register("tvm", TvmBackend.description)(TvmBackend())
