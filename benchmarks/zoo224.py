"""The torchvision zoo at 224 px on cpu-ort, end to end with the real ``edgeprune compress`` CLI (issue #24 item 6).

Step 1 builds the target's device cost model once (``edgeprune profile --target cpu-ort``, no ``--model``;
docs/costmodel.md), timed. Step 2 runs ``edgeprune compress`` in a subprocess per model, random-init
torchvision weights (1000 classes), ``--data none --input-shape 1,3,224,224 --criterion l1 --epochs 0``, its
own ``--out`` under a temp dir and the shared ``--profiles`` dir (and ``EDGEPRUNE_CACHE_DIR``), so compress
prices each model with the device model (a per-model calibration on a few whole models, no layer tables).

Per model: channel groups (prunable / frozen), params and MACs kept, profile time (the device model's build,
once, then the per-model calibration), predicted vs measured latency of the compressed model and of the dense
one, compress wall time, engine agreement / max error, budget met; a model whose compress fails gets its
one-line error in its row. The per-model calibrated profile is deleted before each run so its time is measured.

Run: .venv/bin/python benchmarks/zoo224.py [--models resnet18,mobilenet_v2] [--budget latency=0.6x] [--quick]
     [--reuse-device-model] [--device-budget-min 12] [--device-samples 1200] [--cache-dir /tmp/edgeprune-zoo224]
Writes benchmarks/results/zoo-224-cpu-ort.json and .md (``--out`` for another stem).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = "cpu-ort"
MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny")
OUT = ROOT / "benchmarks" / "results" / "zoo-224-cpu-ort"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune", *args]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["EDGEPRUNE_CACHE_DIR"] = str(cache)
    return env


def one_line_error(stderr: str, rc: int) -> str:
    """The CLI's one-line reason (``edgeprune: ...``), else the last line of a traceback, else the exit code."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("edgeprune:")]
    text = said[-1] if said else (lines[-1] if lines else f"exit code {rc}")
    return f"exit {rc}: {text[:400]}"


def device_model_path(profiles: Path) -> Path:
    """Where ``edgeprune profile --target cpu-ort --profiles DIR`` writes the device model."""
    return profiles / f"{TARGET}.device.json"


def device_model_summary(path: Path) -> dict[str, Any]:
    """What the device model file says about its build: kernels, rounds, complete, measuring time, CV errors."""
    d = json.loads(path.read_text())
    return {"path": str(path), "kernels": len(d.get("samples", {})), "rounds": len(d.get("rounds", [])),
            "complete": bool(d.get("complete")), "budget": d.get("budget"),
            "measure_s": (d.get("timings_s") or {}).get("measure"), "cv_error": d.get("cv_error")}


def build_device_model(profiles: Path, cache: Path, budget_min: float, samples: int, reuse: bool,
                       log_dir: Path) -> dict[str, Any]:
    """Step 1: the device model, built (or resumed / extended) by the CLI and timed; reused as is with ``reuse``."""
    path = device_model_path(profiles)
    if reuse and path.exists():
        info = device_model_summary(path)
        if info["complete"]:
            return {**info, "reused": True, "wall_s_this_run": 0.0}
    cmd = _cli("profile", "--target", TARGET, "--profiles", str(profiles), "--budget-min", f"{budget_min:g}",
               "--samples", str(samples))
    print(f"[zoo224] device model: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    with open(log_dir / "device-model.log", "w") as logf:
        rc = subprocess.run(cmd, env=_env(cache), stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode
    wall = time.perf_counter() - t0
    if rc != 0 or not path.exists():
        text = (log_dir / "device-model.log").read_text()
        raise SystemExit(f"device model build failed ({one_line_error(text, rc)}); log: {log_dir / 'device-model.log'}")
    return {**device_model_summary(path), "reused": False, "wall_s_this_run": round(wall, 1),
            "flags": {"budget_min": budget_min, "samples": samples}}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def chosen_attempt(plan: dict[str, Any], measured: float | None) -> dict[str, Any] | None:
    """The planner attempt that became the plan: same objective and measured latency (else the closest)."""
    attempts = plan.get("attempts") or []
    if not attempts:
        return None
    obj = plan.get("objective")
    same = [a for a in attempts if obj is not None and a.get("objective") == obj]
    pool = same or attempts
    if measured is None:
        return pool[-1]
    return min(pool, key=lambda a: abs(a.get("measured_ms", 0.0) - measured))


def row_from_outputs(name: str, out: Path, profile_file: Path) -> dict[str, Any]:
    """The row of one finished run, from its report.json, plan.json and the calibrated per-model profile."""
    row: dict[str, Any] = {}
    rep = json.loads((out / "report.json").read_text())
    dense, comp, plan = rep["dense"], rep["compressed"], rep.get("plan") or {}
    if (out / "plan.json").exists():
        pf = json.loads((out / "plan.json").read_text())
        groups = pf.get("groups") or {}
        row["groups_pruned"] = sum(1 for g in groups.values() if g.get("kept", g.get("size")) < g.get("size", 0))
    row.update({
        "params": {"dense": dense["params"], "compressed": comp["params"], "kept": _ratio(comp["params"], dense["params"])},
        "macs": {"dense": dense["macs"], "compressed": comp["macs"], "kept": _ratio(comp["macs"], dense["macs"])},
        "int8_layers": sum(v == "int8" for v in (plan.get("precisions") or {}).values()),
        "layers": len(plan.get("precisions") or {}),
    })
    att = chosen_attempt(plan, comp["latency_ms"])
    lat: dict[str, Any] = {"unit": rep.get("latency_unit"), "dense_measured": dense["latency_ms"],
                           "compressed_measured": comp["latency_ms"],
                           "compressed_predicted": att.get("predicted_ms") if att else None,
                           "compressed_measured_in_search": att.get("measured_ms") if att else None,
                           "speedup": rep.get("speedup"), "planner": plan.get("planner"),
                           "attempts": [{k: a.get(k) for k in ("label", "predicted_ms", "measured_ms", "int8_layers",
                                                               "time_limited")} for a in plan.get("attempts") or []],
                           "series": plan.get("series")}
    if lat["compressed_predicted"] and lat["compressed_measured"]:
        lat["compressed_error"] = round(lat["compressed_predicted"] / lat["compressed_measured"] - 1, 4)
    if profile_file.exists():
        prof = json.loads(profile_file.read_text())
        row["profile"] = {"file": str(profile_file), "timings_s": prof.get("timings_s"),
                          "calibration": (prof.get("calibration") or {}).get("coef")}
        dl = prof.get("dense_latency")
        if isinstance(dl, dict):
            lat["dense_measured_at_calibration"] = dl.get("median")
        raw, fitted = _dense_predicted(prof)
        lat["dense_predicted_device_model"], lat["dense_predicted"] = raw, fitted
        at_cal = lat.get("dense_measured_at_calibration")
        for key in ("dense_predicted_device_model", "dense_predicted"):
            if lat[key] is not None and at_cal:
                lat[key.replace("predicted", "error")] = round(lat[key] / at_cal - 1, 4)
    row["latency"] = lat
    v = rep.get("verify") or {}
    row["verify"] = dict(v)  # images, top1_agreement, max / mean / relative error, passed, gate, random_inputs
    row["budget"] = rep.get("budget")
    row["budget_met"] = rep.get("budget_met")
    row["budget_detail"] = rep.get("budget_detail")
    row["stage_seconds"] = rep.get("stage_seconds")
    row["time_estimate"] = rep.get("time_estimate")  # announced vs taken (issue 23: within 2x)
    row["top1"] = {"dense": dense.get("top1"), "compressed": comp.get("top1")}
    return row


def _dense_predicted(prof: dict[str, Any]) -> tuple[float | None, float | None]:
    """The dense model priced by the device model alone (the sum of its layer costs) and with the per-model term
    fitted by the calibration (``offset + sum(coef[f] * features[f])``), from the calibrated profile."""
    cal = prof.get("calibration") or {}
    coef = cal.get("coef") or {}
    for point in cal.get("points") or []:
        if point.get("name") == "dense":
            feats = point.get("features") or {}
            fitted = coef.get("offset", 0.0) + sum(coef[k] * v for k, v in feats.items() if k in coef)
            return feats.get("layers"), round(fitted, 4)
    return None, None


def graph_groups(name: str, cache: Path) -> dict[str, Any]:
    """The model's channel groups at 224 px (total, prunable, frozen with reasons), from ``benchmarks/graph_zoo.py``'s
    analysis in its own subprocess (compress's files list every group, frozen ones as kept whole)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from benchmarks.graph_zoo import one; "
            "print('ZOO224 ' + json.dumps(one(sys.argv[2], 224)))")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), name], env=_env(cache), capture_output=True,
                          text=True, cwd=ROOT, timeout=600, check=False)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("ZOO224 ")]
    if proc.returncode != 0 or not found:
        return {"error": one_line_error(proc.stderr, proc.returncode)}
    r = json.loads(found[-1][len("ZOO224 "):])
    if "error" in r:
        return {"error": r["error"]}
    frozen = r.get("frozen") or {}
    return {"total": r["groups"], "prunable": r["prunable"], "frozen": len(frozen), "frozen_reasons": frozen,
            "analysis_s": r.get("seconds"), "analysis_peak_rss_mb": r.get("peak_rss_mb")}


def run_model(name: str, args: argparse.Namespace, profiles: Path, cache: Path, work: Path) -> dict[str, Any]:
    """Step 2 for one model: ``edgeprune compress`` in a subprocess; its row (or its one-line error)."""
    sys.path.insert(0, str(ROOT))
    from edgeprune.profile import default_profile_path, profile_model_name

    spec = f"torchvision:{name}"
    prof_file = default_profile_path(TARGET, profile_model_name(spec), profiles, input_size=(224, 224))
    if prof_file.exists():
        prof_file.unlink()  # measure this model's calibration, not an earlier run's
    out = work / name
    if out.exists():
        shutil.rmtree(out)
    cmd = _cli("compress", "--model", spec, "--target", TARGET, "--data", "none", "--input-shape", "1,3,224,224",
               "--criterion", "l1", "--epochs", "0", "--budget", args.budget, "--profiles", str(profiles),
               "--out", str(out)) + (["--quick"] if args.quick else [])
    print(f"[zoo224] {name}: {' '.join(cmd[2:])}", flush=True)
    row: dict[str, Any] = {"model": name, "command": "edgeprune " + " ".join(cmd[3:]),
                           "groups": graph_groups(name, cache)}
    log = work / f"{name}.log"
    t0 = time.perf_counter()
    try:
        with open(log, "w") as logf:  # stdout and stderr in one file, readable while it runs
            rc = subprocess.run(cmd, env=_env(cache), stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                timeout=args.timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        rc = None
    logf_text = log.read_text(errors="replace")
    row["compress_wall_s"] = round(time.perf_counter() - t0, 1)
    row["exit_code"] = rc
    row["log"] = str(log)
    if rc is None:
        row["error"] = f"timed out after {args.timeout:g} s"
    elif rc != 0:
        row["error"] = one_line_error(logf_text, rc)
    if (out / "report.json").exists():  # written also when the budget is missed or verification fails
        try:
            row.update(row_from_outputs(name, out, prof_file))
        except (KeyError, ValueError, TypeError) as err:
            row.setdefault("error", f"could not read the outputs: {type(err).__name__}: {err}")
    elif prof_file.exists():
        row["profile"] = {"file": str(prof_file), "timings_s": json.loads(prof_file.read_text()).get("timings_s")}
    return row


def _f(v: Any, fmt: str = ".3g", none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _name(row: dict[str, Any]) -> str:
    """The model's name, with the invocation it came from when that is not this document's."""
    return row["model"] + (f" ({row['invocation']})" if row.get("invocation") else "")


def markdown(doc: dict[str, Any]) -> str:
    """The results as a markdown page: setup, device model, one row per model."""
    dm, m = doc["device_model"], doc["machine"]
    built = "reused as it was" if dm.get("reused") else f"this run's build or extension: {dm.get('wall_s_this_run')} s wall"
    lines = [
        f"# The torchvision zoo at 224 px on {TARGET}, end to end with `edgeprune compress`",
        "",
        (f"{doc['date']}; {m.get('cpu')}, {m.get('cores')} cores ({m.get('isa')}), load average at start "
        f"{doc['loadavg_start']}, at end {doc.get('loadavg_end')}; shared with other jobs, so timings are noisy."),
        (f"Budget `{doc['budget']}`, random-init weights (1000 classes), `--data none --input-shape 1,3,224,224 "
        f"--criterion l1 --epochs 0`{' --quick' if doc['quick'] else ''}. Written by `benchmarks/zoo224.py`."),
        "",
        (f"Device model (step 1, once): {dm['kernels']} kernels in {dm['rounds']} rounds, "
        f"{'complete' if dm['complete'] else 'INCOMPLETE'}, {_f(dm.get('measure_s'), '.0f')} s of measuring in all "
        f"(budget {dm.get('budget')}); {built}."),
        "",
        ("| model | groups prunable / frozen (pruned) | params kept | MACs kept | int8 layers | calibration s "
        "| dense ms: measured / device model / calibrated | compressed ms: predicted / measured | speedup "
        "| compress wall s | engine agreement / max err | budget met |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        if "params" not in r:
            g = r.get("groups") or {}
            lines.append(f"| {_name(r)} | {g.get('prunable', '-')} / {g.get('frozen', '-')} | | | | | | | "
                         f"| {_f(r.get('compress_wall_s'), '.0f')} | | "
                         f"error: {r.get('error', '?').replace('|', '/')} |")
            continue
        g, lat, v = r.get("groups") or {}, r["latency"], r.get("verify") or {}
        cal = ((r.get("profile") or {}).get("timings_s") or {}).get("total_this_run")
        dense = (f"{_f(lat.get('dense_measured_at_calibration'))} / {_f(lat.get('dense_predicted_device_model'))} / "
                 f"{_f(lat.get('dense_predicted'))}")
        comp = f"{_f(lat.get('compressed_predicted'))} / {_f(lat.get('compressed_measured'))}"
        met = "yes" if r.get("budget_met") else "NO"
        if r.get("error"):
            met += f" ({r['error'].replace('|', '/')})"
        agree = v.get("top1_agreement")
        lines.append(
            f"| {_name(r)} | {g.get('prunable', '-')} / {g.get('frozen', '-')} ({r.get('groups_pruned', '-')}) "
            f"| {_f(r['params']['kept'], '.2f')}x "
            f"| {_f(r['macs']['kept'], '.2f')}x | {r.get('int8_layers')}/{r.get('layers')} | {_f(cal, '.0f')} | {dense} "
            f"| {comp} | {_f(lat.get('speedup'), '.2f')}x | {_f(r.get('compress_wall_s'), '.0f')} "
            f"| {_f(agree, '.1f')}% / {_f(v.get('max_abs_error'), '.2e')} (rel. {_f(v.get('relative_error'), '.1e')}"
            f"{', passed' if v.get('passed') else ', FAILED'}) | {met} |")
    if doc.get("notes"):
        lines += ["", *(f"Note: {n}" for n in doc["notes"])]
    if doc.get("partial"):
        lines += ["", f"**PARTIAL**: {doc['partial']}"]
    lines += ["", ("Groups: channel groups found at 224 px (benchmarks/graph_zoo.py's analysis), prunable / frozen, and "
              "in brackets how many the plan pruned. Dense: measured during the per-model calibration, priced by the "
              "device model alone (sum of layer costs) and with the fitted per-model term. Compressed: the planner's "
              "prediction (device model + per-model term, mapped to this run's dense measurement) and the final "
              "interleaved measurement of the engine, which the speedup and the budget use. Engine agreement: top-1 "
              "agreement of the engine with PyTorch on random inputs (no data), max |error| of the outputs, relative error "
              "(mean |engine - torch| / mean |torch|) and whether verification's gate passed."), ""]
    return "\n".join(lines)


def write(doc: dict[str, Any], stem: Path) -> None:
    """Write STEM.json and STEM.md (atomically)."""
    from edgeprune.fileio import write_json

    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_suffix(".json"), doc)
    tmp = stem.with_suffix(".md.tmp")
    tmp.write_text(markdown(doc))
    tmp.replace(stem.with_suffix(".md"))


def main(argv: list[str] | None = None) -> int:
    """Build the device model, compress each model, print and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision names")
    ap.add_argument("--budget", default="latency=0.6x")
    ap.add_argument("--quick", action="store_true", help="pass --quick to compress (short timing protocol)")
    ap.add_argument("--reuse-device-model", action="store_true",
                    help="use the finished device model in --cache-dir as it is (else build, resume or extend it)")
    ap.add_argument("--device-budget-min", type=float, default=12.0, help="edgeprune profile --budget-min (default 12)")
    ap.add_argument("--device-samples", type=int, default=1200, help="edgeprune profile --samples (default 1200)")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "edgeprune-zoo224"),
                    help="EDGEPRUNE_CACHE_DIR of the runs; the device model and profiles live in its profiles/")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one compress may take (default 1800)")
    ap.add_argument("--out", default=str(OUT), help="results stem (.json and .md are written)")
    ap.add_argument("--note", action="append", default=[], help="a note stored in the results (repeatable)")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the .json at --out")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.render:
        doc = json.loads(Path(args.out).with_suffix(".json").read_text())
        write(doc, Path(args.out))
        print(markdown(doc))
        return 0
    from edgeprune.environment import machine_info

    cache = Path(args.cache_dir)
    profiles = cache / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="zoo224-", dir=cache))
    doc: dict[str, Any] = {"benchmark": "zoo224", "target": TARGET, "budget": args.budget, "quick": args.quick,
                           "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
                           "loadavg_start": [round(x, 2) for x in os.getloadavg()], "work_dir": str(work),
                           "settings": "--data none --input-shape 1,3,224,224 --criterion l1 --epochs 0",
                           "notes": list(args.note), "rows": []}
    t0 = time.perf_counter()
    doc["device_model"] = build_device_model(profiles, cache, args.device_budget_min, args.device_samples,
                                             args.reuse_device_model, work)
    print(f"[zoo224] device model: {json.dumps({k: v for k, v in doc['device_model'].items() if k != 'cv_error'})}",
          flush=True)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    stem = Path(args.out)
    for i, name in enumerate(names):
        doc["partial"] = f"{i} of {len(names)} models done (run in progress)"
        row = run_model(name, args, profiles, cache, work)
        doc["rows"].append(row)
        doc["partial"] = f"{i + 1} of {len(names)} models done (run in progress)"
        print(f"[zoo224] {name}: " + json.dumps({k: row.get(k) for k in ("groups", "budget_met", "compress_wall_s",
                                                                         "error")}), flush=True)
        write(doc, stem)  # after every model: a stopped run keeps the rows done
    doc.pop("partial", None)
    doc["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["total_wall_s"] = round(time.perf_counter() - t0, 1)
    write(doc, stem)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
