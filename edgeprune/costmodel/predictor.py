"""The device model as a planner's predictor: prices any layer signature, with the per-model term on top.

:class:`DevicePredictor` has the methods of :class:`edgeprune.profile.lut.Predictor`
(``layer_cost``, ``layer_sum``, ``features``, ``model_cost``, ``int8_scale``, ``layout``,
``unit``), so ``plan()`` and the profiler's calibration use it unchanged.

``layer_cost(sig)``: the layer is split into kernels by the backend's fusion rule
(:func:`~edgeprune.costmodel.space.split_kernels`); each kernel is priced by its type's
regressor, scaled by the shape's own factor (the geometric mean of measured / predicted
over its samples in that alignment class: a constant, so monotonicity is kept), then clamped between the measured samples of the same shape and
alignment class that it dominates and that dominate it (an isotonic post-fix:
measured values are first made monotone by a running max). So the prediction is
the measurement at a measured point (up to that fix, i.e. within noise) and stays
monotone in c_in and c_out within an alignment class.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from edgeprune.costmodel.model import DeviceModel
from edgeprune.costmodel.space import alignment_class, kernel_type, split_kernels
from edgeprune.errors import BadInput
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.lut import Predictor

if TYPE_CHECKING:
    from edgeprune.profile.lut import Profile


class DevicePredictor(Predictor):
    """Latency of any layer from a :class:`DeviceModel` (plus a calibrated per-model term)."""

    def __init__(self, device_model: DeviceModel, calibration: Mapping[str, Any] | None = None) -> None:
        super().__init__(device_model.unit, device_model.multiple, calibration)
        self.device_model = device_model
        self._cache: dict[str, float] = {}
        self._anchors: dict[tuple[str, tuple[bool, bool]], list[tuple[int, int, float]]] | None = None
        self._ratios: dict[tuple[str, tuple[bool, bool]], float] = {}

    @classmethod
    def from_profile(cls, prof: Profile) -> DevicePredictor:
        """The predictor of a calibrated per-model profile that embeds its device model (``cost_model``)."""
        return cls(DeviceModel(prof.data["cost_model"]), prof.data.get("calibration"))

    # ------------------------------------------------------------------ kernels

    def _anchor_table(self) -> dict[tuple[str, tuple[bool, bool]], list[tuple[int, int, float]]]:
        """Measured samples per (shape, alignment class), made monotone (running max over dominated points)."""
        if self._anchors is None:
            groups: dict[tuple[str, tuple[bool, bool]], list[tuple[int, int, float]]] = {}
            for rec in self.device_model.samples.values():
                sig = LayerSignature.from_dict(rec["signature"])
                groups.setdefault((sig.shape_key(), alignment_class(sig, self.multiple)), []).append(
                    (sig.in_channels, sig.out_channels, float(rec["median"])))
            for key, pts in groups.items():
                groups[key] = [(ci, co, max(v for a, b, v in pts if a <= ci and b <= co)) for ci, co, _ in pts]
            self._anchors = groups
            self._ratios = self._fit_ratios(groups)
        return self._anchors

    def _fit_ratios(self, groups: dict) -> dict[tuple[str, tuple[bool, bool]], float]:
        """Per (shape, alignment class) with samples: the geometric mean of measured / regressor, a constant
        factor (so monotonicity is kept) that makes a shape's own samples steer its prediction."""
        import numpy as np

        by_reg: dict[tuple[str, str], list[tuple[tuple, LayerSignature, float]]] = {}
        for rec in self.device_model.samples.values():
            sig = LayerSignature.from_dict(rec["signature"])
            gk = (sig.shape_key(), alignment_class(sig, self.multiple))
            by_reg.setdefault((kernel_type(sig), sig.dtype), []).append((gk, sig, float(rec["median"])))
        logs: dict[tuple, list[float]] = {}
        for (kind, dtype), rows in by_reg.items():
            reg = self.device_model.regressor(kind, dtype)
            if reg is None:
                continue
            raw = reg.predict([r[1] for r in rows])
            for (gk, _, y), p in zip(rows, raw):
                logs.setdefault(gk, []).append(float(np.log(max(y, 1e-12) / max(p, 1e-12))))
        return {gk: float(np.exp(np.mean(v))) for gk, v in logs.items()}

    def _ratio(self, sig: LayerSignature) -> float:
        self._anchor_table()
        cls = alignment_class(sig, self.multiple)
        got = self._ratios.get((sig.shape_key(), cls))
        if got is None:  # the shape measured in another alignment class only: its factor is the best guess
            others = [v for (k, c), v in self._ratios.items() if k == sig.shape_key()]
            got = float(sum(others) / len(others)) if others else 1.0
        return got

    def prefetch(self, sigs: Iterable[LayerSignature]) -> None:
        """Price many kernels in one batch per regressor (the planner's many look-ups then hit the cache)."""
        todo: dict[tuple[str, str], list[LayerSignature]] = {}
        for s in sigs:
            for k in split_kernels(s, self.device_model.backend):
                if k.key() not in self._cache:
                    todo.setdefault((kernel_type(k), k.dtype), []).append(k)
        for (kind, dtype), ks in todo.items():
            reg = self._regressor(kind, dtype, ks[0])
            for k, v in zip(ks, reg.predict(ks)):
                self._cache[k.key()] = self._clamp(k, float(v) * self._ratio(k))

    def _regressor(self, kind: str, dtype: str, sig: LayerSignature):
        reg = self.device_model.regressor(kind, dtype)
        if reg is None:
            raise BadInput(f"the device model of {self.device_model.target_name} has no {kind} kernels in {dtype} "
                           f"(cannot price {sig.key()}; re-measure with `edgeprune profile --target "
                           f"{self.device_model.target_name} --fresh`)")
        return reg

    def _clamp(self, sig: LayerSignature, raw: float) -> float:
        pts = self._anchor_table().get((sig.shape_key(), alignment_class(sig, self.multiple)))
        if not pts:
            return raw
        ci, co = sig.in_channels, sig.out_channels
        lo = max((v for a, b, v in pts if a <= ci and b <= co), default=None)
        hi = min((v for a, b, v in pts if a >= ci and b >= co), default=None)
        if hi is not None:
            raw = min(raw, hi)
        if lo is not None:
            raw = max(raw, lo)
        return raw

    def kernel_cost(self, sig: LayerSignature) -> float:
        """Predicted cost of one kernel (a signature the fusion rule keeps whole)."""
        key = sig.key()
        got = self._cache.get(key)
        if got is None:
            reg = self._regressor(kernel_type(sig), sig.dtype, sig)
            got = self._cache[key] = self._clamp(sig, float(reg.predict([sig])[0]) * self._ratio(sig))
        return got

    # ------------------------------------------------------------------ the Predictor interface

    def has(self, sig: LayerSignature) -> bool:
        """Whether the device model can price ``sig`` (its kernel types were measured in its precision)."""
        try:
            return all(self.device_model.regressor(kernel_type(k), k.dtype) is not None
                       for k in split_kernels(sig, self.device_model.backend))
        except ValueError:
            return False

    def layer_cost(self, sig: LayerSignature) -> float:
        """Predicted cost of one layer: its kernels under the backend's fusion rule."""
        try:
            kernels = split_kernels(sig, self.device_model.backend)
        except ValueError as err:
            raise BadInput(f"the device model cannot price {sig.key()}: {err}") from None
        return float(sum(self.kernel_cost(k) for k in kernels))

    def layout(self, sig: LayerSignature) -> str | None:
        """Not recorded per layer by the device model (the per-model term uses ``layers`` and ``unaligned_melems``)."""
        return None
