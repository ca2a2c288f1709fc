"""``--config FILE.toml``: every setting of a command in a file, the flags the user typed override it.

Not a command (no ``register``). :func:`add_config_option` is called last when building a command's parser: it
records every option's default and replaces it with ``argparse.SUPPRESS``, so the parsed namespace holds only the
flags actually typed; :func:`resolve_settings` then fills the rest from the TOML file, else the recorded defaults.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput, close_names

_DEFAULTS = "_settings_defaults"
_ACTIONS = "_settings_actions"
_SKIP = ("help", "config")


def add_config_option(p: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.toml`` and make every option so far overridable by it (call after the other options)."""
    defaults: dict[str, Any] = {}
    kinds: dict[str, argparse.Action] = {}
    for action in p._actions:
        if action.dest in _SKIP or action.dest is argparse.SUPPRESS or not action.option_strings:
            continue
        defaults[action.dest] = action.default
        kinds[action.dest] = action
        action.default = argparse.SUPPRESS
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="settings from a TOML file (keys are the long flags: budget = \"latency=0.5x\", epochs = 1, "
                        "max-drop = \"1pt\", freeze = [\"conv1\"], model-arg = {num_classes = 10}); flags typed here override it")
    p.set_defaults(**{_DEFAULTS: defaults, _ACTIONS: kinds})


def _value(key: str, action: argparse.Action, value: Any) -> Any:
    """A TOML value checked (and converted) like the flag's own argument."""
    flag = action.option_strings[-1]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise BadInput(f"config key {key!r}: {flag} is true or false, got {value!r}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if key.replace("-", "_") == "model_arg" and isinstance(value, dict):
            return [f"{k}={v}" for k, v in value.items()]
        return [_value(key, _Single(action), v) for v in items]
    if isinstance(value, (dict, list)):
        raise BadInput(f"config key {key!r}: {flag} takes one value, got {type(value).__name__}")
    if action.type is not None:
        try:
            value = action.type(value)
        except (TypeError, ValueError):
            raise BadInput(f"config key {key!r}: bad value {value!r} for {flag}") from None
    elif action.type is None and not isinstance(value, str):
        value = str(value)
    if action.choices is not None and value not in action.choices:
        raise BadInput(f"config key {key!r}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


class _Single(argparse.Action):
    """One item of an append option, checked like a single-valued one."""

    def __init__(self, action: argparse.Action) -> None:
        super().__init__(action.option_strings, action.dest, type=action.type, choices=action.choices)

    def __call__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - never parsed
        raise NotImplementedError


def read_settings(path: str, actions: dict[str, argparse.Action]) -> dict[str, Any]:
    """``{dest: value}`` from a TOML file of long-flag keys (``max-drop`` or ``max_drop``); an unknown key is an error."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BadInput(f"cannot read config file {path}: {err}") from None
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dest = key.replace("-", "_")
        if dest not in actions:
            known = [k.replace("_", "-") for k in actions]
            raise BadInput(f"unknown key {key!r} in config file {path}{close_names(key, known)}")
        out[dest] = _value(key, actions[dest], value)
    return out


def resolve_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every setting the user did not type: from ``--config`` when given, else the flag's default.

    A namespace from a parser without :func:`add_config_option` is returned unchanged.
    """
    defaults = getattr(args, _DEFAULTS, None)
    if defaults is None:
        return args
    actions = getattr(args, _ACTIONS)
    from_file = read_settings(args.config, actions) if getattr(args, "config", None) else {}
    for dest, default in defaults.items():
        if not hasattr(args, dest):
            setattr(args, dest, from_file.get(dest, default))
    delattr(args, _DEFAULTS)
    delattr(args, _ACTIONS)
    return args


__all__ = ["add_config_option", "read_settings", "resolve_settings"]
