"""MetaSchedule tuning with a persistent tuning database (one per TVM target, under the user cache).

The database is MetaSchedule's JSON database (``database_workload.json`` +
``database_tuning_record.json``) in ``<cache>/tvm-tune/<hash of the TVM target string>/``
(:func:`edgeprune.paths.cache_dir`; never the package or a checkout). MetaSchedule keys
workloads by the structural hash of each task's TIR, so models that share a layer
configuration share its schedules. ``trials.json`` beside it records how many trials each
workload has had: a task that already had its share of the budget is not tuned again (a
second compile of the same model tunes nothing). The trial budget is spread over the tasks
that still need tuning in proportion to their FLOPs (at least ``min_per_task`` each), the
heaviest first, one task at a time so progress can be shown and ``tune_minutes`` can cap it (the
shares left shrink when tuning runs behind that pace; tasks not reached keep default schedules).
tvm is imported inside functions only.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.fileio import write_json

if TYPE_CHECKING:
    from edgeprune.config import Target


@dataclass
class TuneReport:
    """What a tuning run did: the stated trial budget, what it spent, what came from the database."""

    trials_budget: int
    tasks: int = 0
    tasks_tuned: int = 0  # tuned in this run
    tasks_from_database: int = 0  # already tuned for this target: nothing measured
    tasks_skipped: int = 0  # no budget or time left for them: default schedules
    trials_spent: int = 0  # trials allotted and run in this run (a task whose design space runs out stops early)
    tune_s: float = 0.0
    stopped_by_time: bool = False
    weight_prepack: bool = False
    database: str = ""
    per_task: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def database_dir(tgt: Any, root: str | Path | None = None) -> Path:
    """The tuning database folder of the TVM target ``tgt``: ``root`` (default ``<cache>/tvm-tune``) / hash of ``str(tgt)``."""
    from edgeprune.paths import cache_dir

    base = Path(root) if root is not None else cache_dir() / "tvm-tune"
    return base / hashlib.sha256(str(tgt).encode()).hexdigest()[:16]


SHIPPED = Path(__file__).resolve().parent / "shipped_tuning"  # read-only, in the package


def seed_from_shipped(folder: Path, tgt: Any, shipped: Path = SHIPPED) -> bool:
    """Start an empty database folder from the package's shipped one for the same target string, if any (the
    embedded demo model's schedules, tuned on the CPU its target string names); True when it did. The shipped
    folder is only read: records tuned later go to ``folder``."""
    src = database_dir(tgt, shipped)
    if folder.exists() or not (src / "database_tuning_record.json").is_file():
        return False
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.replace(folder)
    return True


def compact_database(src: Path, dst: Path, keep: int = 1) -> dict[str, int]:
    """Copy the database in ``src`` to ``dst`` keeping the ``keep`` fastest records per workload (MetaSchedule
    stores every measured candidate: megabytes; a build only queries the best). Unfinished last lines and
    records without a measurement are dropped. Returns ``{"records_in", "records_out"}``."""
    import shutil

    best: dict[int, list[tuple[float, str]]] = {}
    n_in = 0
    for line in (src / "database_tuning_record.json").read_text().splitlines():
        try:
            widx, rec = json.loads(line)
            secs = [float(v) for v in rec[1]]
        except (ValueError, TypeError, IndexError):
            continue
        n_in += 1
        if secs:
            best.setdefault(int(widx), []).append((sum(secs) / len(secs), line))
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("database_workload.json", "target.txt", "trials.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    kept = [line for w in sorted(best) for _, line in sorted(best[w])[:keep]]
    (dst / "database_tuning_record.json").write_text("".join(k + "\n" for k in kept))
    return {"records_in": n_in, "records_out": len(kept)}


def open_database(folder: Path, tgt: Any) -> Any:
    """MetaSchedule's JSON database in ``folder`` (created), with ``target.txt`` naming the target."""
    from tvm.s_tir import meta_schedule as ms

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "target.txt").exists():
        (folder / "target.txt").write_text(str(tgt) + "\n")
    return ms.database.JSONDatabase(work_dir=str(folder))


def _trials_file(folder: Path) -> Path:
    return folder / "trials.json"


def _load_trials(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_trials_file(folder).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def workload_key(mod: Any) -> str:
    """A stable key of a task's TIR module (its structural hash, as MetaSchedule's database uses)."""
    from tvm_ffi import structural_hash

    return f"{structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


def prepare(mod: Any, tgt: Any, weight_prepack: bool = True) -> Any:
    """The Relax module lowered to fused TIR functions (what MetaSchedule extracts tasks from).

    ``weight_prepack``: the weights (Relax constants) are marked layout-free, so a schedule may
    choose their layout; :func:`finish` folds that re-layout into the constants at compile time.
    """
    import tvm
    from tvm import relax

    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(), relax.get_pipeline("zero")]
    if weight_prepack:
        passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with tgt:
        return tvm.transform.Sequential(passes)(mod)


def finish(mod: Any, tgt: Any, db: Any, weight_prepack: bool = True) -> Any:
    """Apply the database's best schedules; with ``weight_prepack``, fold the weight re-layouts into the constants."""
    import tvm
    from tvm import relax

    with tgt, db, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        if weight_prepack:
            mod = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()])(mod)
    return mod


def tuned_database(tgt: Any) -> Path | None:
    """The user's database folder for ``tgt`` when it (or the shipped one it starts from) holds tuned schedules."""
    folder = database_dir(tgt)
    seed_from_shipped(folder, tgt)
    rec = folder / "database_tuning_record.json"
    return folder if rec.is_file() and rec.stat().st_size > 0 else None


def apply_tuned(mod: Any, tgt: Any, folder: Path, weight_prepack: bool = True) -> tuple[Any, TuneReport]:
    """``mod`` scheduled from the database in ``folder`` with no tuning (a task without a record keeps TVM's
    default schedule): a compile with no trial budget still gets what was tuned before for this target."""
    t0 = time.perf_counter()
    mod = finish(prepare(mod, tgt, weight_prepack), tgt, open_database(folder, tgt), weight_prepack)
    return mod, TuneReport(trials_budget=0, database=str(folder), weight_prepack=weight_prepack,
                           tune_s=round(time.perf_counter() - t0, 1))


def allocate(flops: list[float], budget: int, min_per_task: int) -> list[int]:
    """Split ``budget`` trials over tasks: ``min_per_task`` each (less if the budget is short), the rest by FLOPs."""
    n = len(flops)
    if n == 0 or budget <= 0:
        return [0] * n
    floor = min(min_per_task, budget // n)
    rest = budget - floor * n
    total = sum(flops) or 1.0
    share = [floor + int(rest * f / total) for f in flops]
    # hand what rounding left over to the heaviest tasks
    for i in sorted(range(n), key=lambda j: -flops[j])[: budget - sum(share)]:
        share[i] += 1
    return share


@dataclass
class _Work:
    """The tuning work of one model: its tasks, their FLOPs-weighted trial shares, and those still to tune."""

    tasks: list[Any]
    share: list[int]
    keys: list[str]
    todo: list[int]
    done: dict[str, dict[str, Any]]


def _plan_work(mod: Any, tgt: Any, opts: dict[str, Any], trials: int, folder: Path, report: TuneReport) -> _Work:
    """Extract the tasks, share ``trials`` by FLOPs, and leave out tasks the database already had their share for."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    tasks = ms.relax_integration.extract_tasks(mod, tgt, {})
    report.tasks = len(tasks)
    flops = [max(float(estimate_tir_flops(t.dispatched[0])), 1.0) * float(t.weight) for t in tasks]
    fixed = int(opts.get("tune_trials_per_task", 0))
    share = [fixed] * len(tasks) if fixed else allocate(flops, trials, int(opts.get("tune_min_trials_per_task", 8)))
    done = _load_trials(folder)
    keys = [workload_key(t.dispatched[0]) for t in tasks]
    todo = []
    for i in sorted(range(len(tasks)), key=lambda i: -flops[i]):
        had = int(done.get(keys[i], {}).get("trials", 0))
        if share[i] <= 0:
            report.tasks_skipped += 1
        elif had >= share[i]:
            report.tasks_from_database += 1
            report.per_task.append({"task": tasks[i].task_name, "trials": 0, "from_database": True, "trials_before": had})
        else:
            todo.append(i)
    return _Work(tasks, share, keys, todo, done)


def _tools(target: Target, opts: dict[str, Any]) -> tuple[Any, Any, Any]:
    """MetaSchedule's runner (local, or the target's RPC tracker), builder and cost model."""
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.backends.tvm.rpc import RemoteSpec, ms_build

    workers = int(opts.get("tune_workers", 2))
    if target.is_remote:
        spec = RemoteSpec.parse(target.host)
        runner = ms.runner.RPCRunner(
            ms.runner.RPCConfig(tracker_host=spec.host, tracker_port=spec.port, tracker_key=spec.key,
                                session_timeout_sec=int(opts.get("session_timeout_s", 120))),
            max_workers=1,
        )
    else:
        runner = ms.runner.LocalRunner(timeout_sec=60)
    builder = ms.builder.LocalBuilder(max_workers=workers, timeout_sec=300, f_build=ms_build)
    return runner, builder, ms.cost_model.CostModel.create("xgb", num_tuning_cores=workers)


def _paced_trials(work: _Work, n: int, i: int, elapsed_s: float, minutes: float, spent: int) -> int:
    """Task ``i``'s trials (the ``n``-th to tune), shrunk when the run is behind the pace the time cap allows so
    that every task left still gets some."""
    n_trials = work.share[i]
    if minutes and spent:
        pace = elapsed_s / spent
        left_s = minutes * 60 - elapsed_s
        left_trials = sum(work.share[j] for j in work.todo[n - 1:])
        if pace * left_trials > left_s:
            n_trials = max(min(4, work.share[i]), int(work.share[i] * left_s / (pace * left_trials)))
    return n_trials


def _tune_task(task: Any, n_trials: int, opts: dict[str, Any], tools: tuple[Any, Any, Any], db: Any, logs: str) -> None:
    """MetaSchedule's evolutionary search on one task for ``n_trials`` trials, records into ``db``."""
    from tvm.s_tir import meta_schedule as ms

    runner, builder, cost_model = tools
    pop = int(opts.get("tune_population", 0)) or (256 if n_trials >= 64 else 64)
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=pop, init_min_unmeasured=min(50, pop // 2), genetic_num_iters=2 if pop >= 256 else 1
    )
    ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=[task], work_dir=logs, space="post-order-apply", strategy=strategy, seed=0
    )
    ms.tune.tune_tasks(
        tasks=ctxs, task_weights=weights, work_dir=logs, max_trials_global=n_trials,
        max_trials_per_task=n_trials, num_trials_per_iter=min(n_trials, 32),
        builder=builder, runner=runner, database=db, cost_model=cost_model,
        measure_callbacks="default", task_scheduler="round-robin",
    )


def _best_ms(db: Any, task: Any, tgt: Any) -> float | None:
    """The database's best measured time of ``task`` (ms), if it has one."""
    best = db.query_tuning_record(task.dispatched[0], tgt, task.task_name)
    if best is None or not best.run_secs:
        return None
    return round(float(sum(float(s) for s in best.run_secs) / len(best.run_secs)) * 1e3, 4)


def tune(mod: Any, tgt: Any, target: Target, trials: int, db_dir: Path | None = None,
         log: Callable[[str], None] | None = None, weight_prepack: bool = True) -> tuple[Any, TuneReport]:
    """MetaSchedule-tune ``mod`` (lowered by :func:`prepare`, same ``weight_prepack``) with at most ``trials`` trials;
    returns it scheduled (:func:`finish`) + a report.

    Schedules come from (and go to) the persistent database of ``tgt`` (``db_dir``, default
    :func:`database_dir`); only tasks the database has not had their share of trials for are tuned.
    """
    say = log or (lambda _m: None)
    opts = target.options
    t_start = time.perf_counter()
    folder = Path(db_dir) if db_dir is not None else database_dir(tgt)
    if db_dir is None and seed_from_shipped(folder, tgt):
        say(f"tuning database started from the one shipped for {tgt} (read-only copy in {folder})")
    db = open_database(folder, tgt)
    report = TuneReport(trials_budget=trials, database=str(folder))
    work = _plan_work(mod, tgt, opts, trials, folder, report)
    todo, tasks = work.todo, work.tasks
    say(f"tuning budget {trials} trials over {len(tasks)} tasks: {report.tasks_from_database} already in the database "
        f"{folder}, {len(todo)} to tune")
    minutes = float(opts.get("tune_minutes", 0) or 0)
    tools = _tools(target, opts) if todo else None
    with tempfile.TemporaryDirectory(prefix="edgeprune-tune-") as logs:
        for n, i in enumerate(todo, 1):
            if minutes and time.perf_counter() - t_start > minutes * 60:
                report.stopped_by_time = True
                report.tasks_skipped += len(todo) - n + 1
                say(f"tuning stopped after {minutes:g} min (tune_minutes): {len(todo) - n + 1} task(s) keep default schedules")
                break
            t0 = time.perf_counter()
            n_trials = _paced_trials(work, n, i, t0 - t_start, minutes, report.trials_spent)
            try:
                _tune_task(tasks[i], n_trials, opts, tools, db, logs)
            except Exception as err:  # noqa: BLE001 - one task TVM cannot tune keeps its default schedule
                why = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
                report.tasks_skipped += 1
                report.per_task.append({"task": tasks[i].task_name, "trials": 0, "from_database": False, "error": why})
                say(f"  task {n}/{len(todo)} {tasks[i].task_name}: not tuned ({why}); default schedule")
                continue
            best_ms = _best_ms(db, tasks[i], tgt)
            work.done[work.keys[i]] = {"task": tasks[i].task_name, "trials": n_trials}
            write_json(_trials_file(folder), work.done)
            report.tasks_tuned += 1
            report.trials_spent += n_trials
            report.per_task.append({"task": tasks[i].task_name, "trials": n_trials, "from_database": False,
                                    "best_ms": best_ms, "tune_s": round(time.perf_counter() - t0, 1)})
            say(f"  task {n}/{len(todo)} {tasks[i].task_name}: {n_trials} trials, best {best_ms} ms "
                f"({time.perf_counter() - t0:.0f}s; {time.perf_counter() - t_start:.0f}s so far)")
    mod = finish(mod, tgt, db, weight_prepack)
    report.tune_s = round(time.perf_counter() - t_start, 1)
    return mod, report


__all__ = ["SHIPPED", "TuneReport", "allocate", "apply_tuned", "compact_database", "database_dir", "finish", "open_database", "prepare", "seed_from_shipped", "tune",
           "tuned_database", "workload_key"]
