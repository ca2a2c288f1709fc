"""Channel groups and layer signatures (the planner's decision variables and the LUT keys)."""
from edgeprune.graph.groups import ChannelGraph, ChannelGroup, LayerInfo, Member, channel_groups, prune
from edgeprune.graph.signature import LayerSignature

__all__ = ["ChannelGraph", "ChannelGroup", "LayerInfo", "LayerSignature", "Member", "channel_groups", "prune"]
