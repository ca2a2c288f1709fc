"""Leaf layers edgeprune does not know natively, registered by the module that defines them.

A layer with channel state that is neither a conv, a linear layer, a norm nor
attention (the CIFAR ResNets' :class:`~edgeprune.models.SelectShortcut`, a
user's own leaf module) tells edgeprune how to read and slice its channels
with :func:`register_layer`. Tracing then treats it like a 1x1 conv (its input
channels join the group they read, its output channels the group they feed),
and :func:`edgeprune.prune` calls its ``prune_fn``. This is Torch-Pruning's
"customized pruner" idea; the Torch-Pruning pruner is built from the same
functions unless one is given.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput

PruneFn = Callable[[nn.Module, "torch.Tensor | None", "torch.Tensor | None"], None]


@dataclass(frozen=True)
class LayerPruner:
    """How to trace and slice one leaf layer type.

    ``prune_fn(layer, out_keep, in_keep)`` slices ``layer`` in place to the kept
    output / input channel indices (a LongTensor, or None when that side keeps
    every channel). ``in_channels(layer)`` / ``out_channels(layer)`` read its
    channel counts. ``kind`` is the :class:`~edgeprune.graph.Member` kind its
    members get. ``tp_pruner`` is a Torch-Pruning ``BasePruningFunc`` to use
    instead of the one built from these functions.
    """

    cls: type
    prune_fn: PruneFn
    in_channels: Callable[[nn.Module], int]
    out_channels: Callable[[nn.Module], int]
    kind: str
    tp_pruner: Any = None
    channelwise: bool = False

    def torch_pruning(self) -> Any:
        """A Torch-Pruning pruner for this layer type (for ``DependencyGraph`` or ``customized_pruners``)."""
        if self.tp_pruner is not None:
            return self.tp_pruner
        import torch_pruning as tp

        spec = self

        if self.channelwise:
            class ChannelwisePruner(tp.pruner.BasePruningFunc):
                """Removes channels of a per-channel layer through the registered ``prune_fn`` (in == out)."""

                def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
                    spec.prune_fn(layer, _complement(spec.out_channels(layer), idxs), None)
                    return layer

                prune_in_channels = prune_out_channels

                def get_out_channels(self, layer: nn.Module) -> int:
                    return spec.out_channels(layer)

                get_in_channels = get_out_channels

            ChannelwisePruner.__name__ = f"{self.cls.__name__}Pruner"
            return ChannelwisePruner()

        class RegisteredPruner(tp.pruner.BasePruningFunc):
            """Removes channels through the registered ``prune_fn``."""

            def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
                spec.prune_fn(layer, _complement(spec.out_channels(layer), idxs), None)
                return layer

            def prune_in_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
                spec.prune_fn(layer, None, _complement(spec.in_channels(layer), idxs))
                return layer

            def get_out_channels(self, layer: nn.Module) -> int:
                return spec.out_channels(layer)

            def get_in_channels(self, layer: nn.Module) -> int:
                return spec.in_channels(layer)

        RegisteredPruner.__name__ = f"{self.cls.__name__}Pruner"
        return RegisteredPruner()


# the one registry of custom leaf layers, filled by the modules that define them
LAYER_PRUNERS: dict[type, LayerPruner] = {}


def register_layer(cls: type, *, prune_fn: PruneFn, in_channels: Callable[[nn.Module], int] | None = None,
                   out_channels: Callable[[nn.Module], int] | None = None, kind: str | None = None,
                   tp_pruner: Any = None, channelwise: bool = False) -> LayerPruner:
    """Teach edgeprune to trace and prune the leaf layer ``cls`` (call it next to the class definition).

    ``in_channels`` / ``out_channels`` default to reading the layer's attributes
    of those names; ``kind`` defaults to the lower-cased class name. Registering
    a class again replaces the earlier entry. ``channelwise=True`` registers a
    per-channel op (timm's ``LayerScale``: ``x * gamma``): one channel count
    (``out_channels``, default: the length of its first parameter), coupled
    input and output, not a producer or consumer of a group. Returns the entry.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise BadInput(f"register_layer needs an nn.Module subclass, got {cls!r}")
    if not callable(prune_fn):
        raise BadInput(f"register_layer({cls.__name__}): prune_fn must be callable")
    if channelwise:
        out_channels = out_channels or _first_param_length
        in_channels = in_channels or out_channels
    entry = LayerPruner(
        cls, prune_fn,
        in_channels or (lambda m: int(m.in_channels)),
        out_channels or (lambda m: int(m.out_channels)),
        kind or cls.__name__.lower(), tp_pruner, channelwise,
    )
    LAYER_PRUNERS[cls] = entry
    return entry


def layer_pruner(module: nn.Module) -> LayerPruner | None:
    """The registered entry for ``module``'s exact class, or None."""
    return LAYER_PRUNERS.get(type(module))


def registered_types(channelwise: bool | None = None) -> tuple[type, ...]:
    """Every registered layer class (only the per-channel ones, or only the others, when ``channelwise`` is set)."""
    return tuple(c for c, e in LAYER_PRUNERS.items() if channelwise is None or e.channelwise == channelwise)


def registered_kinds() -> tuple[str, ...]:
    """The member kinds of every registered layer that maps channels (producers/consumers like conv and linear)."""
    return tuple(e.kind for e in LAYER_PRUNERS.values() if not e.channelwise)


def _first_param_length(m: nn.Module) -> int:
    """Channels of a per-channel layer: the number of elements of its first parameter."""
    p = next(m.parameters(recurse=False), None)
    if p is None:
        raise BadInput(f"{type(m).__name__}: a channelwise layer needs out_channels= or a parameter")
    return int(p.numel())


def _complement(n: int, idxs: Any) -> torch.Tensor:
    drop = {int(i) for i in idxs}
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)
