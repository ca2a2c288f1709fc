"""Layer signatures: the keys of the latency look-up tables."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class LayerSignature:
    """What a layer's cost depends on: op, channel counts, kernel, stride, groups, input size, precision.

    ``groups`` of -1 means depthwise (groups == channels, whatever the count).
    ``post`` names what the runtime fuses into the layer (``bn+relu``, ``bn+add+relu``).
    """

    op: str  # "conv2d" | "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)
    dtype: str = "fp32"
    post: str = ""

    def key(self) -> str:
        """A stable string key, used in profile files."""
        g = "dw" if self.groups == -1 else str(self.groups)
        return (
            f"{self.op}|{self.in_channels}x{self.out_channels}|k{self.kernel[0]}x{self.kernel[1]}"
            f"|s{self.stride[0]}x{self.stride[1]}|p{self.padding[0]}x{self.padding[1]}|g{g}"
            f"|{self.in_hw[0]}x{self.in_hw[1]}|{self.dtype}|{self.post}"
        )

    def shape_key(self) -> str:
        """The key without channel counts: all configurations of one layer share it."""
        g = "dw" if self.groups == -1 else str(self.groups)
        return (
            f"{self.op}|k{self.kernel[0]}x{self.kernel[1]}|s{self.stride[0]}x{self.stride[1]}"
            f"|p{self.padding[0]}x{self.padding[1]}|g{g}|{self.in_hw[0]}x{self.in_hw[1]}|{self.dtype}|{self.post}"
        )

    def with_channels(self, in_channels: int, out_channels: int, dtype: str | None = None) -> LayerSignature:
        """The same layer with other channel counts (and optionally another precision)."""
        return replace(self, in_channels=in_channels, out_channels=out_channels, dtype=dtype or self.dtype)

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output spatial size (a Linear keeps its positions: ``in_hw`` counts the tokens it runs over)."""
        if self.op == "linear":
            return self.in_hw
        return tuple(  # type: ignore[return-value]
            (self.in_hw[i] + 2 * self.padding[i] - self.kernel[i]) // self.stride[i] + 1 for i in range(2)
        )

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference (batch 1)."""
        groups = self.in_channels if self.groups == -1 else self.groups
        oh, ow = self.out_hw
        return oh * ow * self.out_channels * (self.in_channels // max(groups, 1)) * self.kernel[0] * self.kernel[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerSignature:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for k in ("kernel", "stride", "padding", "in_hw"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)
