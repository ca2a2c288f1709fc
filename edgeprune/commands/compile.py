"""``edgeprune compile``: emit the engine of a (pruned) model for one target and check it."""
from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune.commands.data_options import add_model_data_options, cli_dataset, data_input_shape
from edgeprune.errors import BadInput, VerificationFailed
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "compile",
        help="emit a dense engine for a target (ONNX/int8 for ORT, VTA instruction stream, TVM module, TensorRT plan)",
        description="Compile a model for a target, write the engine and a manifest, and check it against PyTorch.",
        epilog=(
            "examples:\n"
            "  edgeprune compile --target cpu-ort --model build/demo/model.pt --out build/engine\n"
            "  edgeprune compile --target vta-pynq --model resnet20-cifar10 --out build/fpga   # the simulated FPGA build\n"
            "  edgeprune compile --target cpu-ort --model resnet20-cifar10 --int8 --out build/int8"
        ),
    )
    add_model_data_options(p)
    p.add_argument("--target", required=True, help="target name or .toml file")
    p.add_argument("--out", default=None, help="output folder (default build/compile-<target>)")
    p.add_argument("--int8", action="store_true", help="quantise to int8 (ORT: QDQ, calibrated on --data)")
    p.add_argument("--tune-trials", type=int, default=None, metavar="N",
                   help="TVM targets: MetaSchedule trial budget (default: the target's tune_trials; schedules persist "
                        "in the target's tuning database under the user cache)")
    p.add_argument("--verify-images", type=int, default=200, help="images to compare engine and PyTorch on (0 to skip)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, ui: UI) -> int:
    """Compile and verify."""
    from edgeprune.backends import get_backend
    from edgeprune.compile import compile as emit
    from edgeprune.config import get_target
    from edgeprune.graph import example_input
    from edgeprune.models import load_model
    from edgeprune.verify import verify

    target = get_target(args.target)
    if args.tune_trials is not None:
        from edgeprune.backends.base import option_names

        if "tune_trials" not in option_names(get_backend(target.backend).options_schema):
            raise BadInput(f"--tune-trials applies to targets whose backend tunes (TVM), not {target.name} ({target.backend})")
        if args.tune_trials < 0:
            raise BadInput("--tune-trials must be >= 0")
    ok, reason = target.availability()
    if not ok:
        raise BadInput(f"target {target.name} cannot compile here: {reason}")
    model = load_model(args.model).eval()
    data = cli_dataset(args)
    example = example_input(None, data, data_input_shape(args))
    out = Path(args.out or f"build/compile-{target.name}")
    backend = get_backend(target.backend)
    calib = data.train.sample(256) if data is not None else example
    options = backend.compile_options(calib, args.int8)
    if args.tune_trials is not None:
        options.update(tune_trials=args.tune_trials, log=ui.log)
    ui.log(f"compiling {args.model} for {target.name} into {out} ...")
    engine = emit(model, target, out, example, **options)
    result = {"target": target.name, "out": str(out), "files": {k: str(v) for k, v in engine.files.items()},
              "manifest": {k: v for k, v in engine.manifest.items() if k != "report"}}
    rows = [(k, str(v)) for k, v in engine.files.items()]
    fields, extra_rows = backend.engine_report(engine)
    result.update(fields)
    rows += extra_rows
    vrep = None
    if args.verify_images > 0 and data is not None and engine.runner is not None:
        vrep = verify(engine, model, data.test, limit=args.verify_images,
                      min_agreement=backend.verify_threshold(quantized=args.int8))
        result["verify"] = vrep.to_dict()
        rows += [("top-1 agreement vs PyTorch (%)", vrep.top1_agreement), ("engine top-1 (%)", vrep.engine_top1)]
    ui.result(result)
    ui.table(f"engine for {target.name}", ["item", "value"], rows)
    failure = backend.check_engine(engine)
    if failure:
        raise VerificationFailed(failure)
    if vrep is not None and not vrep.passed:
        raise VerificationFailed(f"engine disagrees with PyTorch: top-1 agreement {vrep.top1_agreement:.1f}%")
    return 0
