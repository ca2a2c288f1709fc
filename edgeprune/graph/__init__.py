"""Tracing and the group model: channel groups, layer signatures, custom leaf layers, example inputs.

Physical removal of channels is in :mod:`edgeprune.prune`.
"""
from edgeprune.graph.analyse import channel_groups
from edgeprune.graph.custom_layers import LAYER_PRUNERS, LayerPruner, register_layer
from edgeprune.graph.example import example_input
from edgeprune.graph.model import ChannelGraph, ChannelGroup, LayerInfo, Member
from edgeprune.graph.signature import LayerSignature

__all__ = ["LAYER_PRUNERS", "ChannelGraph", "ChannelGroup", "LayerInfo", "LayerPruner", "LayerSignature", "Member",
           "channel_groups", "example_input", "register_layer"]
