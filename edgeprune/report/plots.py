"""The report's charts as PNG bytes (matplotlib, Agg backend, imported lazily)."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from edgeprune.report.data import Candidate, LayerRow, PredPoint, TargetLatency

DENSE = "#aab4c0"
COMP = "#2f6fdf"
GOOD = "#1a7f37"
BAD = "#cf222e"
DTYPE_COLORS = {"fp32": "#aab4c0", "fp16": "#f2b134", "bf16": "#e8833a", "int8": "#2f6fdf", "int4": "#8e44ad"}
WIDTH_IN = 11.0
DPI = 120


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "grid.linestyle": "-",
        "legend.frameon": False, "savefig.bbox": "tight", "figure.dpi": DPI,
    })
    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.12)
    plt.close(fig)
    return buf.getvalue()


def _layer_axis(ax, names: Sequence[str]) -> None:
    n = len(names)
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=8 if n <= 32 else 6.5 if n <= 70 else 5)
    ax.set_xlim(-0.7, n - 0.3)
    ax.grid(axis="x", visible=False)


def _fmt(v: float, unit: str) -> str:
    if unit == "cycles":
        return f"{v:,.0f} cycles"
    return f"{v:.3g} {unit}"


def layer_latency(tl: TargetLatency, layers: Sequence[LayerRow]) -> bytes:
    """Grouped bars: predicted latency of each layer, dense beside compressed."""
    plt = _plt()
    import numpy as np

    names = [r.name for r in layers if r.name in tl.compressed]
    d = np.array([tl.dense.get(n) if tl.dense.get(n) is not None else np.nan for n in names], float)
    c = np.array([tl.compressed.get(n) if tl.compressed.get(n) is not None else np.nan for n in names], float)
    scale, unit = (1000.0, "µs") if tl.unit == "ms" else (1.0, tl.unit)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    x = np.arange(len(names))
    ax.bar(x - 0.2, d * scale, 0.4, color=DENSE, label=f"dense (sum {_fmt(np.nansum(d), tl.unit)})")
    ax.bar(x + 0.2, c * scale, 0.4, color=COMP, label=f"compressed (sum {_fmt(np.nansum(c), tl.unit)})")
    for i in np.flatnonzero(np.isnan(c)):
        ax.text(i, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color=BAD)
    _layer_axis(ax, names)
    ax.set_ylabel(f"predicted latency ({unit})")
    ax.set_title(f"Per-layer latency on {tl.target} (from the profile's look-up table)", loc="left")
    top = np.nanmax(np.concatenate([d, c, [0.0]])) * scale
    ax.set_ylim(0, (top or 1.0) * 1.22)
    ax.legend(loc="upper right", ncols=2)
    return _png(fig)


def channels(layers: Sequence[LayerRow]) -> bytes:
    """Output channels of each layer: dense (grey) and kept (blue), with the kept share on top."""
    plt = _plt()
    import numpy as np

    names = [r.name for r in layers]
    d = np.array([r.dense_out for r in layers], float)
    k = np.array([r.kept_out for r in layers], float)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    x = np.arange(len(names))
    ax.bar(x, d, 0.75, color=DENSE, label="dense")
    ax.bar(x, k, 0.75, color=COMP, label="kept")
    if len(names) <= 40:
        for i in range(len(names)):
            if d[i] > 0 and k[i] < d[i]:
                ax.text(i, d[i], f"{100 * k[i] / d[i]:.0f}%", ha="center", va="bottom", fontsize=7, color="#444")
    _layer_axis(ax, names)
    ax.set_ylabel("output channels")
    ax.set_ylim(0, max(d.max(initial=1), 1) * 1.12)
    total_d, total_k = d.sum(), k.sum()
    ax.set_title(f"Channels kept per layer ({int(total_k):,} of {int(total_d):,} output channels, "
                 f"{100 * total_k / max(total_d, 1):.0f}%)", loc="left")
    ax.legend(loc="upper left", ncols=2)
    return _png(fig)


def bitwidths(layers: Sequence[LayerRow]) -> bytes:
    """A two-row strip: precision of each layer, dense and compressed."""
    plt = _plt()
    from matplotlib.patches import Patch, Rectangle

    names = [r.name for r in layers]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.5))
    used = []
    for row, attr in ((1, "dense_dtype"), (0, "dtype")):
        for i, r in enumerate(layers):
            dt = getattr(r, attr)
            used.append(dt)
            ax.add_patch(Rectangle((i - 0.45, row - 0.4), 0.9, 0.8, color=DTYPE_COLORS.get(dt, "#555")))
    ax.set_ylim(-0.6, 1.6)
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["compressed", "dense"])
    _layer_axis(ax, names)
    ax.grid(False)
    for s in ("left", "bottom"):
        ax.spines[s].set_visible(False)
    ax.tick_params(length=0)
    kinds = [k for k in DTYPE_COLORS if k in used] + sorted(set(used) - set(DTYPE_COLORS))
    ax.legend(handles=[Patch(color=DTYPE_COLORS.get(k, "#555"), label=k) for k in kinds], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize=9)
    ax.set_title("Precision per layer", loc="left")
    return _png(fig)


def pareto(cands: Sequence[Candidate], latency_limit: float | None, unit: str = "ms") -> bytes:
    """Top-1 against measured latency (``unit``: ms, or ``cycles (simulated)``) of every model the run evaluated;
    the frontier joins the non-dominated ones."""
    plt = _plt()
    from matplotlib.transforms import blended_transform_factory

    fig, ax = plt.subplots(figsize=(WIDTH_IN * 0.62, 4.4))
    with_acc = [c for c in cands if c.top1 is not None]
    style = {"dense": {"marker": "s", "s": 70, "color": "#555", "zorder": 4},
             "chosen": {"marker": "*", "s": 260, "color": COMP, "zorder": 5, "edgecolor": "white", "linewidth": 0.8},
             "candidate": {"marker": "o", "s": 36, "color": "#8fb3f0", "zorder": 3},
             "attempt": {"marker": "o", "s": 36, "color": "#8fb3f0", "zorder": 3}}
    labelled = set()
    for c in with_acc:
        st = dict(style.get(c.kind, style["candidate"]))
        lab = {"dense": "dense model", "chosen": "compressed (chosen)"}.get(c.kind, "other candidates")
        ax.scatter([c.latency_ms], [c.top1], label=None if lab in labelled else lab, **st)
        labelled.add(lab)
        if c.kind in ("dense", "chosen"):
            ax.annotate(f"{c.label}\n{c.latency_ms:.3g} {unit.split()[0]}, {c.top1:.1f}%", (c.latency_ms, c.top1),
                        textcoords="offset points", xytext=(8, 6), fontsize=8.5)
    front = _frontier([(c.latency_ms, c.top1) for c in with_acc])
    if len(front) > 1:
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color=COMP, alpha=0.45, linewidth=1.4, label="Pareto frontier", zorder=2)
    no_acc = [c for c in cands if c.top1 is None]
    if no_acc:
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter([c.latency_ms for c in no_acc], [0.03] * len(no_acc), marker="|", s=220, color="#e8833a",
                   transform=tr, clip_on=False, label="timed only (no top-1)", zorder=3)
    if latency_limit:
        ax.axvline(latency_limit, color=BAD, linestyle="--", linewidth=1.2, label=f"latency budget {latency_limit:.3g} ms")
    xs_all = [c.latency_ms for c in cands] + ([latency_limit] if latency_limit else [])
    if xs_all:
        lo, hi = min(xs_all), max(xs_all)
        pad = (hi - lo) * 0.12 or hi * 0.1 or 1.0
        ax.set_xlim(max(0.0, lo - pad), hi + pad * 2.2)
    if with_acc:
        ys = [c.top1 for c in with_acc]
        pad = max((max(ys) - min(ys)) * 0.25, 1.0)
        bottom = min(ys) - pad * 1.3
        ax.set_ylim(max(bottom, -1.0) if min(ys) >= 0 else bottom, min(max(ys) + pad, 101.0) if max(ys) <= 100 else max(ys) + pad)
    ax.set_xlabel("simulated latency (cycles)" if "simulated" in unit else f"measured latency ({unit})")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs latency of the models this run evaluated", loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize=8.5)
    return _png(fig)


def _frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    out: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            out.append((x, y))
            best = y
    return out


def predictor(points: Sequence[PredPoint], unit: str, audit: dict[str, Any] | None) -> bytes:
    """Predicted against measured whole-model latency, with the +-5% band."""
    plt = _plt()
    import numpy as np

    fig, ax = plt.subplots(figsize=(WIDTH_IN * 0.62, 5.0))
    vals = [v for p in points for v in (p.predicted, p.measured) if v and v > 0]
    lo, hi = (min(vals), max(vals)) if vals else (0.1, 1.0)
    span = hi - lo or hi * 0.2
    lo, hi = max(0.0, lo - 0.08 * span), hi + 0.08 * span
    x = np.linspace(lo, hi, 50)
    ax.fill_between(x, 0.95 * x, 1.05 * x, color=GOOD, alpha=0.14, label="±5%", linewidth=0)
    ax.plot(x, x, color=GOOD, linewidth=1.0, alpha=0.8, label="predicted = measured")
    ax.plot(x, 0.9 * x, color=GOOD, linewidth=0.7, linestyle=":", alpha=0.7)
    ax.plot(x, 1.1 * x, color=GOOD, linewidth=0.7, linestyle=":", alpha=0.7, label="±10%")
    styles = {"audit aligned": {"marker": "o", "color": COMP, "s": 28, "alpha": 0.8},
              "audit unaligned": {"marker": "o", "facecolor": "white", "edgecolor": "#e8833a", "s": 28, "linewidth": 1.2},
              "audit dense": {"marker": "s", "color": "#555", "s": 50},
              "this run": {"marker": "D", "color": BAD, "s": 55, "zorder": 5}}
    names = {"audit aligned": "audit: aligned widths", "audit unaligned": "audit: unaligned widths",
             "audit dense": "audit: dense model", "this run": "this run"}
    for kind, st in styles.items():
        sel = [p for p in points if p.kind == kind]
        if sel:
            ax.scatter([p.measured for p in sel], [p.predicted for p in sel], label=f"{names[kind]} ({len(sel)})", **st)
    for p in points:
        if p.kind == "this run":
            ax.annotate(p.label.replace("this run: ", ""), (p.measured, p.predicted), textcoords="offset points",
                        xytext=(6, -12), fontsize=8, color=BAD)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"measured ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    title = "Predicted vs measured whole-model latency"
    if audit and audit.get("median_abs_error") is not None:
        title += f"\naudit: median |error| {audit['median_abs_error']:.1%}, {audit.get('within_5pct', 0):.0%} within ±5%"
    ax.set_title(title, loc="left")
    ax.legend(loc="upper left", fontsize=8.5)
    return _png(fig)
