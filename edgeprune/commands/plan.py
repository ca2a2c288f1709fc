"""``edgeprune plan``: channels and bit-widths per layer under a budget, for one or several targets."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeprune.commands.data_options import (
    add_model_data_options,
    check_model_input,
    cli_data,
    data_input_shape,
    data_spec,
)
from edgeprune.commands.model_options import add_model_source_options
from edgeprune.commands.profile import add_foreign_option, add_profiles_option
from edgeprune.errors import BadInput
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "plan",
        help="choose kept channels and precisions per layer to meet a budget (exact MILP)",
        description=(
            "Choose, per channel group, how many channels to keep (top importance scores) and, per layer, the "
            "precision, maximising retained importance under every budget at once: latency per target "
            "(from profiles), model bytes, peak activation memory, MACs. Solved exactly (docs/plan.md)."
        ),
        epilog=(
            "examples:\n"
            "  edgeprune plan --model resnet56-cifar10 --target cpu-ort --budget latency=0.5x\n"
            "  edgeprune plan --model resnet56-cifar10 --target cpu-ort --target vta-pynq \\\n"
            "      --budget latency@cpu-ort=1.5ms,latency@vta-pynq=600000cycles --out plan.json --json"
        ),
    )
    add_model_data_options(p, default_model=None, default_data=None)
    add_model_source_options(p)
    p.add_argument("--target", action="append", required=True, help="target name or TOML file (repeat for several)")
    p.add_argument("--budget", required=True, help="e.g. latency=0.5x,bytes=2MB or latency@cpu-ort=1.5ms,latency@vta-pynq=600000cycles")
    p.add_argument("--profile", action="append", default=[], metavar="FILE",
                   help="profile per --target, in the same order (default: PROFILES/TARGET--MODEL--HxW.json, measured when missing)")
    add_profiles_option(p)
    add_foreign_option(p)
    p.add_argument("--scores", metavar="FILE", help="importance scores {group: [scores]} (.json, or .pt saved with torch.save)")
    p.add_argument("--criterion", default="fisher", help="importance criterion when --scores is not given (default fisher)")
    p.add_argument("--freeze", action="append", default=[], metavar="PATTERN", help="layer-name glob kept whole (repeatable)")
    p.add_argument("--granularity", type=int, help="channel multiple (default: budget's granularity=, else LCM of the targets')")
    p.add_argument("--precisions", help="comma list of allowed precisions (default: those every target supports)")
    p.add_argument("--max-prune", type=float, default=None, metavar="FRACTION",
                   help="remove at most this fraction of any channel group (e.g. 0.5; default: no floor)")
    p.add_argument("--weighting", default="importance", choices=["importance", "uniform"],
                   help="objective: weigh each channel group by its total importance (default) or count every group alike")
    p.add_argument("--time-limit", type=float, default=10.0, metavar="SECONDS",
                   help="solver time limit in seconds (default 10); a plan cut short by it says so")
    p.add_argument("--schedule", choices=("oneshot", "iterative"), default="oneshot",
                   help="iterative: re-score the shrinking model between --steps smaller steps (no fine-tuning here)")
    p.add_argument("--steps", type=int, default=3, help="steps of the iterative schedule (default 3)")
    p.add_argument("--out", metavar="FILE", help="write plan.json here")
    p.set_defaults(func=run)
    return p


def load_scores(path: str) -> dict[str, Any]:
    """Scores from JSON ``{group: [floats]}`` or a torch file of ``{group: tensor}``."""
    import torch

    f = Path(path)
    if f.suffix == ".json":
        from edgeprune.fileio import read_json

        raw = read_json(f, "scores file")
        if isinstance(raw, dict) and "scores" in raw and isinstance(raw["scores"], dict):
            raw = raw["scores"]
    else:
        if not f.exists():
            raise BadInput(f"scores file not found: {f}")
        try:
            raw = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds for a foreign or damaged file
            raise BadInput(f"cannot read scores file {f}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not isinstance(raw, dict) or not raw:
        raise BadInput(f"scores file {f} must hold a non-empty {{group: scores}} mapping")
    try:
        return {str(k): torch.as_tensor(v, dtype=torch.float64).flatten() for k, v in raw.items()}
    except (TypeError, ValueError, RuntimeError) as err:
        raise BadInput(f"scores file {f}: bad scores ({err})") from None


def plan_example(model: Any, model_spec_name: str, data: Any, shape: tuple[int, ...] | None, stored: Any, ui: UI) -> Any:
    """The example input to plan at: from ``data``, else ``shape`` (--input-shape), else the zoo model's own
    shape, else the shape the model's profile was measured at (``stored``), else guessed from the first layer (logged)."""
    from edgeprune.graph import example_input
    from edgeprune.models import model_spec

    if data is not None or shape is not None:
        return example_input(None, data, shape)
    spec = model_spec(model_spec_name)
    if spec is not None:
        return example_input(None, shape=spec.input_shape)
    if stored is not None:
        ui.log(f"input shape {'x'.join(map(str, stored.shape))}, as the profile was measured (--input-shape to change it)")
        return stored
    example = example_input(model)
    ui.log(f"[yellow]warning: no --input-shape or --data: guessing input {'x'.join(map(str, example.shape))}[/]")
    return example


def _criterion_needs_data(name: str) -> bool:
    """Whether criterion ``name`` scores on data (an unknown name: one-line error)."""
    from edgeprune.importance import list_criteria

    crit = {n: c for n, c, _ in list_criteria()}
    if name not in crit:
        raise BadInput(f"unknown importance criterion {name!r} (known: {', '.join(crit)})")
    return bool(crit[name].needs_data)


def get_profiles(model: Any, example: Any, targets: list, model_name: str, paths: list[str], ui: UI,
                 profiles: str | None = None, allow_foreign: bool | None = None, graph: Any = None) -> dict[str, Any]:
    """``{target name: Profile}``: given files in --target order, else the one ``find_profile`` finds at the
    example's input size (``profiles`` or the user cache, then the shipped ones; a size-less legacy file only when
    it prices the model's layers in ``graph``), else measured now and saved in ``profiles`` or the cache."""
    import edgeprune.profile as prof

    if len(paths) > len(targets):
        raise BadInput(f"{len(paths)} --profile files for {len(targets)} --target(s): give at most one per target, in order")
    out = {}
    for i, t in enumerate(targets):
        if i < len(paths):
            out[t.name] = prof.load_profile(paths[i], target=t, allow_foreign=allow_foreign)
            continue
        size = prof.profile_input_size(example)
        found = prof.find_profile(t.name, model_name, profiles, size)
        loaded = None if found is None else prof.load_profile(found, target=t, allow_foreign=allow_foreign)
        if loaded is not None and graph is not None and prof.is_legacy_profile(found, t.name, model_name):
            from edgeprune.profile.lut import dense_signatures

            why = prof.unpriced_layers(loaded, dense_signatures(graph, t))
            if why is not None:
                ui.log(f"profile {found} does not price this model at this input size ({why})")
                loaded = None
        if loaded is not None:
            ui.log(f"profile for {t.name}: {found}")
            _warn_refitted(loaded, t, model_name, ui)
            out[t.name] = loaded
        else:
            where = prof.default_profile_path(t.name, model_name, profiles, size)
            ui.log(f"no profile for {t.name} and {model_name}: measuring it now (saved to {where})")
            out[t.name] = prof.profile(model, example, t, model_name=model_name, profiles=profiles)
    return out


def _warn_refitted(loaded: Any, target: Any, model_name: str, ui: UI) -> None:
    """A profile whose layer tables come from another CPU (re-fitted here) prices badly: say so, and how to fix it."""
    from edgeprune.environment import device_fingerprint
    from edgeprune.profile.device import tables_from_elsewhere

    diff = tables_from_elsewhere(loaded.data, device_fingerprint(target))
    if diff:
        ui.log(f"[yellow]warning: {'; '.join(diff)}; re-fitted tables priced ResNet-56 up to 29% off here: re-measure "
               f"with `edgeprune profile --target {target.name} --model {model_name} --fresh` (about a minute)[/]")


def run(args: argparse.Namespace, ui: UI) -> int:
    """Plan and print (or write) the result."""
    from edgeprune.config import Budget, get_target
    from edgeprune.data import load_data
    from edgeprune.graph import channel_groups
    from edgeprune.models import load_model
    from edgeprune.plan import PlanConfig
    from edgeprune.plan import plan as make_plan
    from edgeprune.profile import profile_model_name

    budget = Budget.parse(args.budget)
    targets = [get_target(t) for t in args.target]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise BadInput(f"target given twice: {', '.join(names)}")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()] if args.precisions else None
    if args.steps < 1:
        raise BadInput("--steps must be >= 1")
    if not args.model:
        raise BadInput("plan needs --model (a registered name, a saved module file, or pkg.mod:function)")
    shape = data_input_shape(args)  # a malformed --input-shape is named first
    if not args.scores and _criterion_needs_data(args.criterion):
        data_spec(args)  # a user model without --data fails now, not after profiling
    model = load_model(args.model, args=args.model_arg, weights=args.weights)
    model_name = profile_model_name(args.model)  # the profile file `profile` and `compress` use
    if shape is not None:
        check_model_input(args, model)
    data = None
    if shape is None and (args.data or "none").lower() != "none":  # the data's own image size
        data = cli_data(args)
        data = load_data(data) if isinstance(data, str) else data
    stored = None
    if data is None and shape is None and not args.profile:
        from edgeprune.profile import model_profiles, stored_example

        stored = next((e for t in targets for e in map(stored_example, model_profiles(t.name, model_name, args.profiles))
                       if e is not None), None)
    example = plan_example(model, args.model, data, shape, stored, ui)
    graph = channel_groups(model, example)
    profiles = get_profiles(model, example, targets, model_name, args.profile, ui, args.profiles,
                            allow_foreign=True if args.allow_foreign_profile else None, graph=graph)
    for name, p in profiles.items():
        foreign = getattr(p, "foreign", None)
        if foreign:
            ui.log(f"[yellow]warning: planning {name} on a profile from another device ({'; '.join(foreign)})[/]")
    for name, p in profiles.items():
        measured = (p.data.get("example") or {}).get("shape") if isinstance(getattr(p, "data", None), dict) else None
        if measured and list(measured) != list(example.shape):
            ui.log(f"[yellow]warning: the {name} profile was measured at input {'x'.join(map(str, measured))}, "
                   f"this plan is at {'x'.join(map(str, example.shape))} (--input-shape)[/]")
    predictors = {name: p.predictor() for name, p in profiles.items()}

    def scores_for(m: Any, g: Any = None) -> dict[str, Any]:
        nonlocal data
        from edgeprune.importance import importance, list_criteria

        crit = {name: c for name, c, _ in list_criteria()}
        if args.criterion not in crit:
            raise BadInput(f"unknown importance criterion {args.criterion!r} (known: {', '.join(crit)})")
        if data is None and crit[args.criterion].needs_data:
            data = cli_data(args)
            if data is None:
                raise BadInput(f"criterion {args.criterion} needs data: pass --data, --scores FILE or a data-free "
                               "--criterion (l1, l2)")
            data = load_data(data) if isinstance(data, str) else data
        with ui.progress(f"importance ({args.criterion})") as bar:
            s = importance(m, data, args.criterion, graph=g)
            bar.advance(1)
        return s

    cfg = PlanConfig(freeze=tuple(args.freeze or ()), granularity=args.granularity, precisions=precisions,
                     time_limit=args.time_limit, model_name=model_name, weighting=args.weighting, max_prune=args.max_prune)
    kw = {"targets": targets, "config": cfg}
    if args.schedule == "iterative":
        if args.scores:
            raise BadInput("--schedule iterative re-scores the model between steps: drop --scores (use --criterion/--data)")
        from edgeprune.plan import iterative

        res = iterative(model, budget, predictors, rescore=lambda m: scores_for(m), steps=args.steps, example=example,
                        on_step=lambda t, p, m: ui.log(f"step {t}/{args.steps}: {p.budget} solved in {p.wall_s:.2f} s"), **kw)
        result = res.composed_plan()
        result.solver["wall_s"] = sum(p.wall_s for p in res.plans)
        result.solver["steps"] = [p.solver for p in res.plans]
    else:
        scores = load_scores(args.scores) if args.scores else scores_for(model, graph)
        result = make_plan(model, scores, budget, predictors, graph=graph, example=example, **kw)
    if args.out:  # with its source (model, input shape, groups, targets, budget): edgeprune apply reads it
        from edgeprune.models import parse_model_args
        from edgeprune.models.pruned import plan_source, write_plan

        write_plan(args.out, result.to_dict(), plan_source(args.model, parse_model_args(args.model_arg), example, graph,
                                                            names, str(budget)))
        ui.log(f"wrote {args.out} (apply it with: edgeprune apply --plan {args.out} --target {names[0]} ...)")
    ui.log(f"solved ({result.solver['status']}) in {result.wall_s:.2f} s; objective {result.objective:.4f}")
    if result.solver.get("time_limited"):
        ui.log(f"[yellow]warning: the solver hit its {args.time_limit:g} s time limit (--time-limit): "
               "the plan is not proven optimal[/]")
    obj = result.to_dict()
    if args.out:
        obj["out"] = str(args.out)
    ui.result(obj)
    ui.table("plan: budgets", list(result.BUDGET_COLUMNS), result.budget_rows())
    ui.table("plan: groups", list(result.SUMMARY_COLUMNS), result.summary_rows())
    for note in result.notes:
        ui.log(f"note: {note}")
    if not result.feasible:
        from edgeprune.errors import BudgetMissed

        raise BudgetMissed(next((n for n in result.notes if "exceeds" in n), "the plan misses the budget"))
    return 0


__all__ = ["get_profiles", "load_scores", "plan_example", "register", "run"]
