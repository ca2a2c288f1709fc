"""The device model file: measured kernel samples of one target, its device fingerprint, and the fitted regressors.

One JSON document (schema ``edgeprune.devicemodel``, version :data:`SCHEMA_VERSION`; docs/costmodel.md),
written atomically (:mod:`edgeprune.fileio`) and shareable: it holds the samples, not pickled
regressors; :meth:`DeviceModel.regressor` refits one kernel type's regressor (deterministically)
on first use. ``{profiles}/{target}.device.json`` in the user cache unless a path is given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.costmodel.fit import FitConfig, KernelRegressor
from edgeprune.costmodel.space import kernel_type
from edgeprune.errors import BadInput
from edgeprune.graph.signature import LayerSignature

if TYPE_CHECKING:
    from edgeprune.config import Target

SCHEMA = "edgeprune.devicemodel"
SCHEMA_VERSION = 1


def device_model_path(target: Any, profiles: str | Path | None = None) -> Path:
    """Where the device model of ``target`` (a Target or name) is written: ``{profiles_dir}/{target}.device.json``."""
    from edgeprune.profile.lut import profiles_dir

    return profiles_dir(profiles) / f"{getattr(target, 'name', target)}.device.json"


def find_device_model(target: Any, profiles: str | Path | None = None) -> Path | None:
    """The device model file of ``target`` if one exists (complete or not), else None."""
    p = device_model_path(target, profiles)
    return p if p.is_file() else None


@dataclass
class DeviceModel:
    """A loaded (or growing) device model: the document and lazily fitted regressors."""

    data: dict[str, Any]
    path: Path | None = None
    _regressors: dict[tuple[str, str], KernelRegressor] = field(default_factory=dict, repr=False)

    @property
    def target_name(self) -> str:
        """The target the kernels were measured on."""
        return self.data["target"]["name"]

    @property
    def unit(self) -> str:
        """``ms`` or ``cycles``."""
        return self.data.get("unit", "ms")

    @property
    def multiple(self) -> int:
        """The target's channel multiple (the alignment features use it)."""
        return int(self.data["target"].get("channel_multiple", 1) or 1)

    @property
    def backend(self) -> str:
        """The target's backend name (its fusion rule)."""
        return self.data["target"].get("backend", "")

    @property
    def complete(self) -> bool:
        """False while a build is interrupted."""
        return bool(self.data.get("complete"))

    @property
    def fit_config(self) -> FitConfig:
        """The regressor settings stored in the file."""
        return FitConfig(**self.data.get("fit", {}))

    @property
    def samples(self) -> dict[str, dict[str, Any]]:
        """Signature key -> measured record (``signature``, ``median``, ``p10``, ``p90``, ``count``, ``layout``)."""
        return self.data["samples"]

    def samples_of(self, kind: str, dtype: str) -> tuple[list[LayerSignature], list[float]]:
        """The measured kernels of one kernel type and precision."""
        sigs, ys = [], []
        for rec in self.samples.values():
            sig = LayerSignature.from_dict(rec["signature"])
            if sig.dtype == dtype and kernel_type(sig) == kind:
                sigs.append(sig)
                ys.append(float(rec["median"]))
        return sigs, ys

    def regressor(self, kind: str, dtype: str) -> KernelRegressor | None:
        """The fitted regressor of ``kind`` / ``dtype`` (None when nothing of it was measured)."""
        key = (kind, dtype)
        if key not in self._regressors:
            sigs, ys = self.samples_of(kind, dtype)
            if not sigs:
                return None
            self._regressors[key] = KernelRegressor(self.multiple, self.fit_config).fit(sigs, ys)
        return self._regressors[key]

    def invalidate(self) -> None:
        """Forget fitted regressors (after new samples)."""
        self._regressors.clear()

    def save(self, path: str | Path | None = None) -> Path:
        """Write the document atomically (to ``path`` or where it came from)."""
        from edgeprune.fileio import write_json

        path = Path(path or self.path or "")
        if not str(path):
            raise BadInput("no path to save the device model to")
        self.path = write_json(path, self.data)
        return self.path


def new_document(target: Target, unit: str, fingerprint: dict[str, Any], space: Any, fit: FitConfig,
                 budget: dict[str, Any]) -> dict[str, Any]:
    """An empty device model document for ``target``."""
    from datetime import UTC, datetime

    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "target": {"name": target.name, "backend": target.backend, "threads": target.threads,
                   "precisions": list(target.precisions), "channel_multiple": target.channel_multiple},
        "fingerprint": fingerprint,
        "unit": unit,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "updated": None,
        "complete": False,
        "space": asdict(space),
        "fit": asdict(fit),
        "budget": budget,
        "samples": {},
        "pending": [],
        "rounds": [],
        "cv_error": {},
        "timings_s": {"measure": 0.0},
        "notes": [],
    }
    if target.options.get("emulated", False):  # an emulated (QEMU) board: the figures mean nothing
        from edgeprune.profile.profiler import EMULATED_NOTE

        doc["emulated"] = True
        doc["notes"].append(EMULATED_NOTE)
    return doc


def validate(doc: Any, path: Path | str = "<device model>") -> None:
    """Check a device model document (one-line :class:`BadInput` on a wrong schema, version or field)."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BadInput(f"{path} is not an edgeprune device model (no \"schema\": \"{SCHEMA}\")")
    ver = doc.get("schema_version")
    if ver != SCHEMA_VERSION:
        raise BadInput(f"device model {path} has schema version {ver!r}; this edgeprune reads version {SCHEMA_VERSION} "
                       "(re-measure it with `edgeprune profile --target T --fresh`)")
    for key, typ in (("target", dict), ("samples", dict), ("fingerprint", dict), ("unit", str)):
        if not isinstance(doc.get(key), typ):
            raise BadInput(f"device model {path}: missing or malformed {key!r}")
    for key, rec in doc["samples"].items():
        try:
            LayerSignature.from_dict(rec["signature"])
            float(rec["median"])
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"device model {path}: malformed sample {key!r}") from None


def check_fingerprint(stored: dict[str, Any], target: Target, path: Path | str, what: str = "device model") -> None:
    """Refuse (one line) a ``what`` measured on another device than this one for ``target``."""
    from edgeprune.environment import device_fingerprint, fingerprint_mismatch

    diff = fingerprint_mismatch(stored, device_fingerprint(target))
    if diff:
        raise BadInput(f"{what} {path} was measured on another device ({'; '.join(diff)}): re-measure it here with "
                       f"`edgeprune profile --target {target.name} --fresh`")


def load_device_model(path: str | Path, target: Target | str | None = None, check_device: bool = True,
                      allow_incomplete: bool = False) -> DeviceModel:
    """Read and validate a device model; with ``target``, its name must match and (``check_device``) its
    fingerprint must match this machine."""
    from edgeprune.fileio import read_json

    path = Path(path)
    doc = read_json(path, "device model")
    validate(doc, path)
    if target is not None:
        from edgeprune.config import get_target

        target = get_target(target)
        if doc["target"]["name"] != target.name:
            raise BadInput(f"device model {path} was measured on target {doc['target']['name']!r}, not {target.name!r}")
        if check_device:
            check_fingerprint(doc["fingerprint"], target, path)
    if not doc.get("complete") and not allow_incomplete:
        raise BadInput(f"device model {path} is incomplete (an interrupted build): finish it with "
                       f"`edgeprune profile --target {doc['target']['name']}`")
    return DeviceModel(doc, path)
