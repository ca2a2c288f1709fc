"""Profile files (the latency look-up tables) and the predictor that interpolates them.

A profile is one JSON document (schema in docs/profile.md): the target spec,
software versions, CPU, date, the grid, one record per layer signature
(median, p10, p90, count, and what the backend chose, e.g. its layout), the
measured dense model, the per-model calibration and the audit.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import BadInput, first_line
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.timing import Timing

if TYPE_CHECKING:
    from edgeprune.config import Target

SCHEMA = "edgeprune.profile"
SCHEMA_VERSION = 1


def profiles_dir(profiles: str | Path | None = None) -> Path:
    """Where profiles are written: ``profiles`` when given (``--profiles DIR``), else ``<user cache>/profiles``."""
    if profiles is not None:
        return Path(profiles).expanduser()
    from edgeprune.paths import cache_dir

    return cache_dir() / "profiles"


def shipped_profiles_dir() -> Path:
    """The read-only profiles shipped inside the package (measured on the project's own machine)."""
    return Path(__file__).resolve().parent / "shipped"


_MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".onnx")


def profile_model_name(model: Any) -> str:
    """The model name a profile file is keyed by, the same for ``profile``, ``plan`` and ``compress``.

    A registered zoo name stays as is (``resnet56-cifar10``); a model file is its stem
    (``runs/best.pt`` -> ``best``); a factory or a source-prefixed name stays whole
    (``pkg.mod:build``, ``torchvision:mobilenet_v2``; ``:`` becomes ``_`` in the file name);
    a module object, or a bare class name, is its class name in lower case (``MobileNetV2`` -> ``mobilenetv2``).
    """
    if not isinstance(model, str):
        return type(model).__name__.lower()
    from edgeprune.models import MODELS

    if model in MODELS:
        return model
    p = Path(model)
    if "/" in model or "\\" in model or p.suffix.lower() in _MODEL_FILE_SUFFIXES:
        return p.stem
    if model.isidentifier():
        return model.lower()
    return model


def profile_input_size(example: Any) -> tuple[int, ...] | None:
    """The input size a profile file is keyed by: an example input's dims after batch and channels
    (``(1, 3, 224, 224)`` -> ``(224, 224)``; ``(1, F)`` -> ``(F,)``); the first tensor of a tuple/dict input;
    None when there is no example (then only the size-less legacy name is looked up)."""
    if isinstance(example, Mapping):
        example = next(iter(example.values()), None)
    elif isinstance(example, (tuple, list)):
        example = example[0] if example else None
    shape = getattr(example, "shape", None)
    return None if shape is None else shape_input_size(shape)


def shape_input_size(shape: Sequence[int]) -> tuple[int, ...] | None:
    """:func:`profile_input_size` of an input shape: ``[1, 3, 224, 224]`` -> ``(224, 224)``."""
    dims = tuple(int(d) for d in shape)
    dims = dims[2:] if len(dims) >= 3 else dims[1:]
    return dims or None


def size_tag(input_size: Any) -> str:
    """``(224, 224)`` -> ``224x224`` (a tag already written stays as is)."""
    return input_size if isinstance(input_size, str) else "x".join(str(int(d)) for d in input_size)


def profile_file_name(target_name: Any, model_name: str, input_size: Any = None) -> str:
    """``{target}--{model}--{H}x{W}.json`` (``input_size`` given: :func:`profile_input_size`), else the size-less
    legacy ``{target}--{model}.json`` (the shipped profiles, caches written before sizes were in the name); a
    target object or its name; path separators in the model name replaced."""
    name = getattr(target_name, "name", target_name)
    safe = str(model_name).replace("/", "_").replace("\\", "_").replace(":", "_")
    return f"{name}--{safe}--{size_tag(input_size)}.json" if input_size else f"{name}--{safe}.json"


def default_profile_path(target_name: Any, model_name: str, profiles: str | Path | None = None,
                         input_size: Any = None) -> Path:
    """Where a new profile of ``model_name`` at ``input_size`` on ``target_name`` is written:
    ``{profiles_dir(profiles)}/{target}--{model}--{H}x{W}.json`` (:func:`profile_file_name`)."""
    return profiles_dir(profiles) / profile_file_name(target_name, model_name, input_size)


def find_profile(target_name: Any, model_name: str, profiles: str | Path | None = None,
                 input_size: Any = None) -> Path | None:
    """The profile to read for ``model_name`` at ``input_size`` on ``target_name``, or None when there is none.

    The sized name first, then the size-less legacy name (:func:`is_legacy_profile`: the caller uses that one
    only when it prices the model's layers, :func:`unpriced_layers`), each looked up in :func:`profiles_dir`
    (``profiles`` when given, else the user cache), then among the profiles shipped with the package
    (read-only; a profile measured here takes precedence).
    """
    names = [profile_file_name(target_name, model_name, input_size)] if input_size else []
    names.append(profile_file_name(target_name, model_name))
    for fname in names:
        for d in (profiles_dir(profiles), shipped_profiles_dir()):
            if (d / fname).is_file():
                return d / fname
    return None


def is_legacy_profile(path: str | Path, target_name: Any, model_name: str) -> bool:
    """Whether ``path`` is the size-less legacy file of ``model_name`` (measured at a size its name does not say)."""
    return Path(path).name == profile_file_name(target_name, model_name)


def model_profiles(target_name: Any, model_name: str, profiles: str | Path | None = None) -> list[Path]:
    """Every profile of ``model_name`` on ``target_name`` at any input size, in :func:`profiles_dir` (newest
    first), then the shipped one: where a command with no input size of its own takes one from."""
    import re

    pattern = re.compile(re.escape(profile_file_name(target_name, model_name)[:-len(".json")])
                         + r"(--\d+(x\d+)*)?\.json")
    found = []
    for d in (profiles_dir(profiles), shipped_profiles_dir()):
        if d.is_dir():
            here = [p for p in d.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
            found += sorted(here, key=lambda p: p.stat().st_mtime, reverse=True)
    return found


def dense_signatures(graph: Any, target: Target) -> dict[str, LayerSignature]:
    """The dense model's layer signatures at the target's widest precision (int8 on an int8-only accelerator)."""
    from edgeprune.metrics import sort_precisions

    widest = "fp32" if "fp32" in target.precisions else sort_precisions(target.precisions)[0]
    return graph.signatures({}, dict.fromkeys(graph.layers, widest))


def unpriced_layers(prof: Profile, signatures: Mapping[str, LayerSignature]) -> str | None:
    """None when ``prof`` prices every layer signature in ``signatures``, else why not (one line), e.g. it was
    measured for the same model name at another input size."""
    try:
        prof.predictor().model_cost(signatures)
    except BadInput as err:
        return first_line(err)
    return None


# --------------------------------------------------------------------------- the profile


@dataclass
class Profile:
    """A loaded (or freshly measured) profile: the raw document plus convenient views."""

    data: dict[str, Any]
    path: Path | None = None
    _predictor: Predictor | None = field(default=None, repr=False)
    foreign: list[str] = field(default_factory=list)  # what differs from this device, when loaded with allow_foreign

    @property
    def target_name(self) -> str:
        """Name of the target the tables were measured on."""
        return self.data["target"]["name"]

    @property
    def model_name(self) -> str | None:
        """The model the profile was made for (the tables serve any model with the same signatures)."""
        return self.data.get("model")

    @property
    def unit(self) -> str:
        """``ms`` or ``cycles``."""
        return self.data.get("unit", "ms")

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """Signature key -> record."""
        return self.data["records"]

    @property
    def precisions(self) -> list[str]:
        """Precisions with measured records."""
        return sorted({r["signature"]["dtype"] for r in self.records.values()})

    @property
    def dense_latency(self) -> Timing | None:
        """The whole dense model, measured with the whole-model protocol."""
        d = self.data.get("dense_latency")
        return Timing(**d) if d else None

    @property
    def audit(self) -> dict[str, Any] | None:
        """The audit figures (median |error|, fraction within 5% / 10%, test-retest spread), or None."""
        return self.data.get("audit")

    @property
    def emulated(self) -> bool:
        """True when measured on an emulated board (QEMU): the timings mean nothing, correctness does."""
        return bool(self.data.get("emulated"))

    @property
    def complete(self) -> bool:
        """False while a run is interrupted (resume it)."""
        return bool(self.data.get("complete"))

    def predictor(self) -> Predictor:
        """The latency predictor over this profile's tables and calibration."""
        if self._predictor is None and self.data.get("cost_model"):  # calibrated over a device model
            from edgeprune.costmodel.predictor import DevicePredictor

            self._predictor = DevicePredictor.from_profile(self)
        if self._predictor is None:
            self._predictor = Predictor.from_profile(self)
        return self._predictor

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The device the profile was measured on (:func:`edgeprune.profile.device.stored_fingerprint`)."""
        from edgeprune.profile.device import stored_fingerprint

        return stored_fingerprint(self.data)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the profile atomically (to ``path`` or where it came from).

        A document that records no device at all (neither ``fingerprint`` nor ``cpu``: built in
        code, not measured elsewhere) gets this machine's fingerprint; one measured elsewhere
        keeps its own, so saving never makes a foreign profile look local.
        """
        from edgeprune.fileio import write_json

        path = Path(path or self.path or "")
        if not str(path):
            raise BadInput("no path to save the profile to")
        if "fingerprint" not in self.data and "cpu" not in self.data:
            from edgeprune.config import get_target
            from edgeprune.environment import device_fingerprint

            try:
                self.data["fingerprint"] = device_fingerprint(get_target(self.target_name))
            except BadInput:  # a target file no longer at hand: leave it as measured
                pass
        self.path = write_json(path, self.data)
        return self.path


def load_profile(path: str | Path, target: Target | str | None = None, allow_incomplete: bool = False,
                 allow_foreign: bool | None = None) -> Profile:
    """Read and validate a profile file; ``target`` (a Target or name) must match the file's target.

    Fails with a one-line :class:`BadInput` on a missing or truncated file, a wrong
    schema or schema version, another target's file, or an interrupted run. With
    ``target``, the profile must also have been measured on this device
    (:func:`edgeprune.profile.device.check_device`: CPU, ISA, threads, runtime version),
    else :class:`~edgeprune.profile.device.ForeignProfile` says how to re-measure;
    ``allow_foreign=True`` (default: the ``EDGEPRUNE_ALLOW_FOREIGN_PROFILE`` variable)
    accepts it, and :attr:`Profile.foreign` then lists what differs.
    """
    from edgeprune.fileio import read_json

    path = Path(path)
    doc = read_json(path, "profile file")
    validate(doc, path)
    if target is not None:
        want = getattr(target, "name", target)
        if doc["target"]["name"] != want:
            raise BadInput(f"profile {path} was measured on target {doc['target']['name']!r}, not {want!r}")
    if not doc.get("complete") and not allow_incomplete:
        raise BadInput(f"profile {path} is incomplete (an interrupted run): finish it with `edgeprune profile ... --resume`")
    prof = Profile(doc, path)
    if target is not None:
        from edgeprune.config import get_target
        from edgeprune.profile.device import check_device

        prof.foreign = check_device(doc, get_target(target), path, allow_foreign)
    return prof


def validate(doc: Any, path: Path | str = "<profile>") -> None:
    """Check the schema of a profile document (raises BadInput with one line)."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BadInput(f"{path} is not an edgeprune profile (no \"schema\": \"{SCHEMA}\")")
    ver = doc.get("schema_version")
    if ver != SCHEMA_VERSION:
        raise BadInput(
            f"profile {path} has schema version {ver!r}; this edgeprune reads version {SCHEMA_VERSION} "
            "(re-run `edgeprune profile` to measure it again)"
        )
    for key, typ in (("target", dict), ("records", dict), ("unit", str)):
        if not isinstance(doc.get(key), typ):
            raise BadInput(f"profile {path}: missing or malformed {key!r}")
    if not isinstance(doc["target"].get("name"), str):
        raise BadInput(f"profile {path}: target has no name")
    for key, rec in doc["records"].items():
        try:
            LayerSignature.from_dict(rec["signature"])
            float(rec["median"])
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"profile {path}: malformed record {key!r}") from None


# --------------------------------------------------------------------------- the predictor


class _Axis:
    """Sorted channel counts measured on one axis of a table, split into aligned / unaligned lattices."""

    def __init__(self, values: list[int], multiple: int) -> None:
        self.all = sorted(set(values))
        self.multiple = max(1, multiple)
        self.aligned = [v for v in self.all if v % self.multiple == 0]
        self.unaligned = [v for v in self.all if v % self.multiple != 0]

    def bracket(self, v: int) -> tuple[list[tuple[int, float]], float]:
        """Interpolation points and weights for ``v``, plus a scale factor for a one-point axis.

        An exact measured value is used as is. Otherwise ``v`` is interpolated on
        the lattice of its own kind (aligned values with aligned, unaligned with
        unaligned: their costs differ by up to 2x on ORT), piecewise linearly,
        extrapolating linearly from the two nearest points outside the range.
        """
        if v in self.all:
            return [(v, 1.0)], 1.0
        cand = self.aligned if v % self.multiple == 0 else self.unaligned
        if len(cand) < 1:
            cand = self.all
        if len(cand) == 1:
            # one measured count: scale proportionally (cost ~ channels near a single point)
            return [(cand[0], 1.0)], v / cand[0]
        i = bisect.bisect_left(cand, v)
        i = min(max(i, 1), len(cand) - 1)
        lo, hi = cand[i - 1], cand[i]
        w = (v - lo) / (hi - lo)
        return [(lo, 1.0 - w), (hi, w)], 1.0


class _Table:
    """All records of one layer shape (signature without channel counts): a (c_in, c_out) grid."""

    def __init__(self, multiple: int) -> None:
        self.values: dict[tuple[int, int], float] = {}
        self.layout: dict[tuple[int, int], str] = {}
        self.multiple = multiple
        self._axes: tuple[_Axis, _Axis] | None = None

    def add(self, cin: int, cout: int, value: float, layout: str | None) -> None:
        self.values[(cin, cout)] = value
        if layout:
            self.layout[(cin, cout)] = layout
        self._axes = None

    @property
    def axes(self) -> tuple[_Axis, _Axis]:
        if self._axes is None:
            self._axes = (
                _Axis([k[0] for k in self.values], self.multiple),
                _Axis([k[1] for k in self.values], self.multiple),
            )
        return self._axes

    def cost(self, cin: int, cout: int) -> float:
        exact = self.values.get((cin, cout))
        if exact is not None:
            return exact
        ax_in, ax_out = self.axes
        pin, sin = ax_in.bracket(cin)
        pout, sout = ax_out.bracket(cout)
        total = 0.0
        for ci, wi in pin:
            for co, wo in pout:
                val = self.values.get((ci, co))
                if val is None:
                    val = self._nearest(ci, co)
                total += wi * wo * val
        total *= sin * sout
        # linear extrapolation below the grid may reach zero: never predict less than a tenth of the smallest entry
        return max(total, 0.1 * min(self.values.values()))

    def _nearest(self, ci: int, co: int) -> float:
        # the grid is a full product, so this only runs on hand-edited or partial tables
        best = min(self.values, key=lambda k: (abs(k[0] - ci) + abs(k[1] - co)))
        return self.values[best]


class Predictor:
    """Latency (or cycles) of layers and whole models from a profile.

    ``layer_cost`` interpolates the table of the layer's shape bilinearly in
    (c_in, c_out) on the lattice of its own alignment (exact at measured points,
    monotone wherever the table is). ``model_cost`` sums the layers and adds the
    per-model term: a least-squares line ``a * layer_sum + b`` fitted on a few
    whole-model measurements (the dense model and random pruned variants), which
    absorbs what isolated layer timings miss (per-call overhead, layout reorders,
    the un-profiled ops such as pooling and shortcuts).
    """

    def __init__(self, unit: str, multiple: int, calibration: Mapping[str, Any] | None = None) -> None:
        self.unit = unit
        self.multiple = multiple
        self.tables: dict[str, _Table] = {}
        self.calibration = dict(calibration or {})

    @classmethod
    def from_profile(cls, prof: Profile) -> Predictor:
        mult = int(prof.data["target"].get("channel_multiple", 1) or 1)
        pred = cls(prof.unit, mult, prof.data.get("calibration"))
        for rec in prof.records.values():
            sig = LayerSignature.from_dict(rec["signature"])
            pred.add(sig, float(rec["median"]), rec.get("layout"))
        return pred

    def add(self, sig: LayerSignature, value: float, layout: str | None = None) -> None:
        """Add one measured point."""
        self.tables.setdefault(sig.shape_key(), _Table(self.multiple)).add(sig.in_channels, sig.out_channels, value, layout)

    def has(self, sig: LayerSignature) -> bool:
        """Whether the profile has a table for this layer's shape and precision."""
        return sig.shape_key() in self.tables

    def layer_cost(self, sig: LayerSignature) -> float:
        """Predicted cost of one layer (interpolated; exact at measured points)."""
        table = self.tables.get(sig.shape_key())
        if table is None:
            shapes = sorted({k.rsplit("|", 2)[1] for k in self.tables})
            raise BadInput(
                f"the profile has no table for layer {sig.key()} "
                f"(profiled precisions: {', '.join(shapes) or 'none'}; re-run `edgeprune profile` for this model)"
            )
        return table.cost(sig.in_channels, sig.out_channels)

    def layer_sum(self, sigs: Mapping[str, LayerSignature]) -> float:
        """Sum of the layers' predicted costs (no per-model term)."""
        return float(sum(self.layer_cost(s) for s in sigs.values()))

    def features(self, sigs: Mapping[str, LayerSignature]) -> dict[str, float]:
        """What the per-model term is fitted on.

        - ``layers``: the sum of the layers' predicted costs;
        - ``layers_plain``: the part of it from layers the backend ran in its plain
          (not blocked) layout, as recorded in the table;
        - ``unaligned_melems``: millions of activation elements (input + output) of conv
          layers with a channel count off the target multiple: on ORT such tensors get
          reorders and unfused Add/ReLU around them in the real model, which isolated
          layer graphs do not show.
        """
        total = plain = unal = 0.0
        m = self.multiple
        s8 = self.int8_scale()
        for s in sigs.values():
            c = self.layer_cost(s) * (s8 if s.dtype == "int8" else 1.0)
            total += c
            if self.layout(s) == "plain":
                plain += c
            if s.op == "conv2d" and m > 1 and (s.in_channels % m or s.out_channels % m):
                oh, ow = s.out_hw
                unal += (s.in_channels * s.in_hw[0] * s.in_hw[1] + s.out_channels * oh * ow) / 1e6
        return {"layers": total, "layers_plain": plain, "unaligned_melems": unal}

    def int8_scale(self) -> float:
        """How much cheaper an int8 layer is inside a whole QDQ model than its isolated table entry says.

        Fitted by the profiler on whole int8 models (``coef["int8_scale"]``); 1 when
        the profile has none. ORT fuses a QDQ graph into QLinear chains that stay in
        int8 between layers, which a layer timed alone (quantise in, dequantise out)
        cannot show.
        """
        return float((self.calibration.get("coef") or {}).get("int8_scale", 1.0))

    def model_cost(self, sigs: Mapping[str, LayerSignature]) -> float:
        """Predicted whole-model cost: the calibrated linear per-model term over :meth:`features`."""
        coef = self.calibration.get("coef") or {}
        if not coef:
            return self.layer_sum(sigs)
        if "layers" not in coef:  # a bare {"scale", "offset"} line
            coef = {"layers": coef.get("scale", 1.0), "offset": coef.get("offset", 0.0)}
        f = self.features(sigs)
        return float(sum(float(v) * f[k] for k, v in coef.items() if k in f) + float(coef.get("offset", 0.0)))

    def layout(self, sig: LayerSignature) -> str | None:
        """The layout the backend chose (``nchwc``/``plain`` on ORT): at a measured point, else at its lattice neighbour."""
        table = self.tables.get(sig.shape_key())
        if table is None or not table.layout:
            return None
        got = table.layout.get((sig.in_channels, sig.out_channels))
        if got is not None:
            return got
        ax_in, ax_out = table.axes
        ci = ax_in.bracket(sig.in_channels)[0][0][0]
        co = ax_out.bracket(sig.out_channels)[0][0][0]
        return table.layout.get((ci, co))


#: the per-model term's features, in the order they are tried (see :func:`fit_calibration`)
MODEL_TERMS = ("layers", "unaligned_melems")


def fit_calibration(points: list[tuple[Mapping[str, float], float]], unit: str = "ms",
                    terms: tuple[str, ...] = MODEL_TERMS) -> dict[str, float]:
    """Fit ``measured = sum(coef[t] * features[t]) + offset`` by least squares on relative error.

    ``points`` are (features, measured) pairs. Terms beyond ``layers`` are used only
    when there are at least two more points than coefficients, the feature varies,
    and the fit stays physical (positive coefficients); otherwise the fit falls back
    to ``layers`` + offset, and with one point to the offset alone (scale 1).
    """
    import numpy as np

    if not points:
        return {"layers": 1.0, "offset": 0.0}
    y = np.array([m for _, m in points], dtype=float)
    w = 1.0 / np.maximum(y, 1e-12)

    def solve(names: tuple[str, ...]) -> dict[str, float] | None:
        X = np.array([[f.get(n, 0.0) for n in names] + [1.0] for f, _ in points], dtype=float)
        if len(points) < X.shape[1] + (2 if len(names) > 1 else 0):
            return None
        sol, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
        if not np.all(np.isfinite(sol)) or np.any(sol[:-1] <= 0):
            return None
        return {**{n: float(v) for n, v in zip(names, sol[:-1])}, "offset": float(sol[-1])}

    for k in range(len(terms), 0, -1):
        names = terms[:k]
        if k > 1 and max(f.get(names[-1], 0.0) for f, _ in points) <= 0:
            continue
        got = solve(names)
        if got is not None:
            return got
    f0, m0 = points[0]
    return {"layers": 1.0, "offset": float(m0 - f0["layers"])}
