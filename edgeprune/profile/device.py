"""Profiles know their device: the fingerprint stored in a profile, compared with this machine's before use.

A profile measured on one CPU (or runtime version, or thread count) says little about another,
so loading one to plan or compress compares the fingerprint it stores with
:func:`edgeprune.environment.device_fingerprint` here and refuses a mismatch with one line that
says how to re-measure. Profiles written before fingerprints existed (schema 1 without
``"fingerprint"``, e.g. the shipped Xeon tables) are compared on what they do record: the
``cpu`` field, the target's thread count and the runtime's version in ``software``.

The escape is explicit: ``allow_foreign=True`` (CLI ``--allow-foreign-profile``, or the
environment variable :data:`ALLOW_FOREIGN_ENV` set to 1), or re-fit the per-model term here
with ``edgeprune profile ... --recalibrate`` (same ISA family only: the tables are kept).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput

ALLOW_FOREIGN_ENV = "EDGEPRUNE_ALLOW_FOREIGN_PROFILE"
"""Set to 1 to use profiles measured on another device anyway (tests of planning logic, shared tables)."""


class ForeignProfile(BadInput):
    """A profile measured on another device (or runtime, or thread count) than this one."""


def _is_remote(fp: Mapping[str, Any]) -> bool:
    return str(fp.get("host") or "local").startswith("rpc://")


def stored_fingerprint(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The device fingerprint a profile document was measured on.

    ``doc["fingerprint"]`` when there is one; for older files, the fields they do record
    (target, backend, host, ``cpu``, threads, the runtime's version from ``software``),
    so a file without fingerprint is still compared on its CPU model.
    """
    fp = doc.get("fingerprint")
    if isinstance(fp, Mapping):
        return dict(fp)
    t = doc.get("target") or {}
    out: dict[str, Any] = {k: t[k] for k in ("name", "backend", "host", "threads") if k in t}
    if "name" in out:
        out["target"] = out.pop("name")
    if doc.get("cpu"):
        out["cpu"] = doc["cpu"]
    try:
        from edgeprune.backends import get_backend

        pkgs = get_backend(t.get("backend", "")).packages
    except Exception:  # noqa: BLE001 - an unknown backend: no runtime to compare
        pkgs = ()
    soft = doc.get("software") or {}
    if pkgs and all(p in soft for p in pkgs):
        out["runtime"] = {p: soft[p] for p in pkgs}
    return out


def device_mismatch(doc: Mapping[str, Any], here: Mapping[str, Any], unit: str | None = None) -> list[str]:
    """What differs between the device a profile was measured on and ``here`` (empty when it matches).

    Simulated targets (``unit == "cycles"``) and remote boards (``rpc://`` hosts) do not depend
    on this host's CPU: only their target, backend, host, threads and runtime are compared.
    """
    from edgeprune.environment import fingerprint_mismatch

    stored = stored_fingerprint(doc)
    if (unit or doc.get("unit")) == "cycles" or _is_remote(stored) or _is_remote(here):
        stored = {k: v for k, v in stored.items() if k not in ("cpu", "isa")}
    return fingerprint_mismatch(stored, dict(here))


def allow_foreign_default() -> bool:
    """Whether :data:`ALLOW_FOREIGN_ENV` asks to accept profiles from another device."""
    return os.environ.get(ALLOW_FOREIGN_ENV, "").strip().lower() in ("1", "true", "yes")


def check_device(doc: Mapping[str, Any], target: Any, path: Path | str, allow_foreign: bool | None = None) -> list[str]:
    """Refuse a profile measured on another device than ``target`` here (one-line :class:`ForeignProfile`).

    Returns the differences when ``allow_foreign`` (default: :func:`allow_foreign_default`)
    lets a foreign profile through, so the caller can say so; ``[]`` when it matches.
    """
    from edgeprune.environment import device_fingerprint

    diff = device_mismatch(doc, device_fingerprint(target))
    if not diff:
        return []
    if allow_foreign is None:
        allow_foreign = allow_foreign_default()
    if allow_foreign:
        return diff
    model = doc.get("model") or "MODEL"
    raise ForeignProfile(
        f"profile {path} was measured on another device ({'; '.join(diff)}): re-measure it here with "
        f"`edgeprune profile --target {target.name} --model {model} --fresh` (or keep its tables and re-fit on this "
        f"machine with `--recalibrate`, same ISA family only), or use it anyway with --allow-foreign-profile"
    )


def tables_from_elsewhere(doc: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """What differs between this device and where the layer tables of a re-fitted profile (``--recalibrate``, or
    what ``compress`` and the demo did to foreign tables until 2026-12) were measured; [] for a profile measured wholly here. Such a file carries this
    machine's fingerprint, but another CPU's tables re-fitted priced ResNet-56 29% off relative to dense."""
    tables = doc.get("tables_fingerprint")
    if not isinstance(tables, Mapping):
        return []
    return [f"layer tables from another device: {d}" for d in device_mismatch({"fingerprint": dict(tables)}, here)]


def measured_elsewhere(doc: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """What differs between ``here`` and where the profile ``doc`` was measured, its layer tables included
    (:func:`device_mismatch`, then :func:`tables_from_elsewhere`); [] for a profile measured wholly here."""
    return device_mismatch(doc, here) or tables_from_elsewhere(doc, here)


def same_isa_family(doc: Mapping[str, Any], here: Mapping[str, Any]) -> bool:
    """Whether the tables of ``doc`` were measured on this machine's ISA family (what ``--recalibrate`` needs).

    A file without fingerprint records no ISA: it counts as the same family when its backend
    and target match (the shipped x86 tables on any x86 machine of the same family's kind).
    """
    stored = stored_fingerprint(doc)
    if stored.get("backend") != here.get("backend"):
        return False
    fam = stored.get("isa_family")
    if fam is None:
        import re

        cpu = str(stored.get("cpu", ""))
        old = "x86" if re.search(r"intel|amd|xeon|epyc|ryzen|core\(tm\)", cpu, re.IGNORECASE) else None
        return old is not None and str(here.get("isa_family", "")).startswith(old)
    return fam == here.get("isa_family")
