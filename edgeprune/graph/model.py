"""The group model: coupled channels (groups), their members, and the layers they size.

What :func:`edgeprune.graph.channel_groups` returns and :func:`edgeprune.prune`
reads; plain data, no tracing.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import BadInput
from edgeprune.graph.custom_layers import registered_kinds
from edgeprune.graph.signature import LayerSignature


def channel_kinds() -> tuple[str, ...]:
    """Member kinds whose in/out channels are producers and consumers: conv, linear and registered layers."""
    return ("conv2d", "linear", *registered_kinds())


@dataclass
class Slice:
    """What removing group channels does to one member: ``member[i]`` goes when ``roots[i]`` is dropped."""

    name: str
    kind: str
    role: str  # "out" | "in"
    pdim: int  # pruning axis of a bare parameter
    roots: Any  # np.ndarray of group channel indices
    idx: Any  # np.ndarray of member channel indices


@dataclass(frozen=True)
class Member:
    """One layer dimension inside a group.

    ``dim`` is "out" (the layer's output channels, and for BN/LayerNorm/depthwise
    convs/attention/parameters the one channel axis they have) or "in" (the input
    channels of a conv/linear/select layer). ``kind`` is "conv2d", "linear",
    "select", "bn", "layernorm", "multiheadattention", "param" (an ``nn.Parameter``
    owned directly by a container, named by its parameter path), ...

    Channel ``c`` of the group is the member's channels
    ``offset + c*span ... offset + (c+1)*span - 1``: ``offset`` is non-zero for a
    consumer that reads the group as one slice of a concatenation (DenseNet,
    SqueezeNet), ``span`` is above 1 for a linear layer after a flatten (VGG: 49
    input features per channel). A per-channel quantity of the member (length
    ``in``/``out`` channels of the layer) reduces to the group's size with
    ``v[offset : offset + size*span].reshape(size, span).sum(1)``.
    """

    layer: str
    kind: str
    dim: str
    offset: int = 0
    span: int = 1


@dataclass
class ChannelGroup:
    """A set of coupled channels: one decision variable for the planner.

    ``unit`` is the number of consecutive channels that go together: 1 for
    plain channels, the group width of a grouped conv (RegNet: 8), the head
    size of an ``nn.MultiheadAttention`` (ViT: whole heads). Channels
    ``[j*unit, (j+1)*unit)`` are kept or removed as one block, so a kept count
    is a multiple of ``unit`` (or the whole group). ``reason`` says why a group
    is not prunable.
    """

    id: str
    size: int
    prunable: bool
    members: list[Member] = field(default_factory=list)
    reason: str = ""
    unit: int = 1

    @property
    def layers(self) -> list[str]:
        """Names of the layers the group touches."""
        return sorted({m.layer for m in self.members})

    @property
    def units(self) -> int:
        """How many blocks of ``unit`` channels the group has."""
        return self.size // self.unit

    def producers(self) -> list[str]:
        """Conv/linear layers whose output channels are this group."""
        return [m.layer for m in self.members if m.dim == "out" and m.kind in channel_kinds()]

    def consumers(self) -> list[str]:
        """Conv/linear layers whose input channels are this group."""
        return [m.layer for m in self.members if m.dim == "in" and m.kind in channel_kinds()]

    def expand_units(self, units: Sequence[int]) -> list[int]:
        """Channel indices of the given blocks (``unit`` channels each)."""
        return [j * self.unit + i for j in sorted({int(u) for u in units}) for i in range(self.unit)]


@dataclass
class LayerInfo:
    """A conv/linear layer, its signature and the groups setting its in/out channels (None = fixed).

    ``in_groups`` lists every group the input channels come from: one for most
    layers, several for a layer reading a concatenation (DenseNet, SqueezeNet),
    where ``in_group`` is None and the input width is the sum of the parts
    (plus any fixed channels). ``in_spans`` gives the input features per
    channel of each part (49 for VGG's first linear layer after a flatten).
    """

    name: str
    signature: LayerSignature
    in_group: str | None
    out_group: str | None
    in_groups: tuple[str, ...] = ()
    in_spans: tuple[int, ...] = ()


@dataclass
class ChannelGraph:
    """The groups of a model and the layers they size; what ``channel_groups`` returns (a list-like)."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerInfo]
    example_inputs: Any
    ignored: tuple[str, ...] = ()
    # per group id: what ``prune`` removes from each member (see Slice)
    plans: dict[str, list[Slice]] = field(default_factory=dict, repr=False)
    output_shapes: Any = field(default=None, repr=False)

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> ChannelGroup:
        return self.groups[i]

    def group(self, gid: str) -> ChannelGroup:
        """The group with id ``gid``."""
        for g in self.groups:
            if g.id == gid:
                return g
        raise BadInput(f"unknown channel group {gid!r}")

    @property
    def prunable(self) -> list[ChannelGroup]:
        """Groups the planner may shrink."""
        return [g for g in self.groups if g.prunable]

    def signatures(self, widths: Mapping[str, int] | None = None, dtypes: Mapping[str, str] | None = None) -> dict[str, LayerSignature]:
        """Layer signatures with group ``widths`` applied (missing groups keep their size)."""
        widths = widths or {}
        out = {}
        sizes = {g.id: g.size for g in self.groups}
        for name, info in self.layers.items():
            sig = info.signature
            cin = widths.get(info.in_group, sig.in_channels) if info.in_group else sig.in_channels
            if info.in_groups:  # subtract what each part loses (span: inputs per channel after a flatten)
                spans = info.in_spans or (1,) * len(info.in_groups)
                cin = sig.in_channels - sum((sizes[g] - widths.get(g, sizes[g])) * k for g, k in zip(info.in_groups, spans))
            cout = widths.get(info.out_group, sig.out_channels) if info.out_group else sig.out_channels
            dtype = (dtypes or {}).get(name, sig.dtype)
            out[name] = sig.with_channels(cin, cout, dtype)
        return out
