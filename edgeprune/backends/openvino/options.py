"""The ``[options]`` of an OpenVINO target file, as a dataclass (unknown keys are a one-line error)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edgeprune.errors import BadInput

#: OpenVINO's INFERENCE_PRECISION_HINT values accepted here
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
ENGINE_FORMATS = ("ir", "onnx")


@dataclass(frozen=True)
class OpenVinoOptions:
    """Known ``[options]`` keys of a target whose backend is ``openvino``.

    ``inference_precision``: OpenVINO's INFERENCE_PRECISION_HINT. It must be
    ``f32`` for an fp32 engine: on a CPU with AVX512-BF16 (or AMX) OpenVINO
    otherwise runs fp32 models in bf16 by default (ResNet-20 logits then differ
    from PyTorch by ~0.07, measured here).
    ``int8_activation`` / ``int8_weight`` / ``reduce_range``: the QDQ format that
    ``edgeprune.quant.ort_int8.quantize_onnx`` writes; OpenVINO runs a QDQ ONNX
    file as int8 natively.
    ``engine_format``: what ``emit`` writes as the engine: OpenVINO IR
    (``model.xml`` + ``model.bin``) or the ONNX file itself.
    """

    inference_precision: str = "f32"
    int8_activation: str = "QUInt8"
    int8_weight: str = "QInt8"
    reduce_range: bool = False
    engine_format: str = "ir"

    @classmethod
    def known(cls) -> tuple[str, ...]:
        """The option names this backend reads."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_target(cls, target: Any) -> OpenVinoOptions:
        """Read and check ``target.options``; an unknown key or a bad value is :class:`BadInput`."""
        raw: Mapping[str, Any] = dict(getattr(target, "options", {}) or {})
        name = getattr(target, "name", "?")
        for key in raw:
            if key not in cls.known():
                raise BadInput(f"target {name}: unknown option {key!r} for backend openvino (known: {', '.join(cls.known())})")
        opts = cls(**raw)
        if opts.inference_precision not in INFERENCE_PRECISIONS:
            raise BadInput(f"target {name}: option inference_precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                           f"got {opts.inference_precision!r}")
        if opts.engine_format not in ENGINE_FORMATS:
            raise BadInput(f"target {name}: option engine_format must be one of {', '.join(ENGINE_FORMATS)}, got {opts.engine_format!r}")
        if not isinstance(opts.reduce_range, bool):
            raise BadInput(f"target {name}: option reduce_range must be true or false")
        return opts
