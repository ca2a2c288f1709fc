"""The model-source flags (--model-arg, --weights) and the model they name; shared by every command that loads a model."""
from __future__ import annotations

import argparse


def add_model_source_options(p: argparse.ArgumentParser) -> None:
    """--model-arg (repeatable) and --weights: how a factory or hub model is built and what weights it gets."""
    p.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="keyword argument of a factory or torchvision:/timm:/efficientnet-lite: model, e.g. num_classes=10 "
                        "(repeatable; "
                        "values are read as int, float, true/false or text)")
    p.add_argument("--weights", default=None, metavar="STATE.pt",
                   help="a state_dict (torch.save(model.state_dict())) to load into the model; read without unpickling")


def cli_model(args: argparse.Namespace):
    """The model the flags name (--model with --model-arg and --weights)."""
    from edgeprune.models import load_model

    return load_model(args.model, args=getattr(args, "model_arg", None), weights=getattr(args, "weights", None))
