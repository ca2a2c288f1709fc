"""The self-contained HTML report: inline CSS, charts as base64 PNG, no scripts, no network."""
from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from edgeprune.report import summary as S
from edgeprune.report.data import RunReport

SECTIONS = [
    ("summary", "Summary"), ("budget", "Budget"), ("latency", "Latency per layer"), ("channels", "Channels kept"),
    ("precision", "Precision"), ("pareto", "Accuracy vs latency"), ("predictor", "Predicted vs measured"),
    ("importance", "Importance"), ("run", "Run details"),
]

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --blue:#2f6fdf; --good:#1a7f37; --bad:#cf222e;
        --goodbg:#dafbe1; --badbg:#ffebe9; --notebg:#fff8c5; --noteline:#d4a72c; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff; font:15px/1.5 -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 48px; }
header .kicker { color:var(--muted); font-size:13px; letter-spacing:.06em; text-transform:uppercase; }
h1 { font-size: 30px; margin: 4px 0 10px; line-height:1.2; }
h2 { font-size: 21px; margin: 0 0 4px; padding-top: 8px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.verdict { display:inline-block; font-weight:600; padding:6px 14px; border-radius:6px; margin: 2px 0 10px; }
.verdict.ok { background:var(--goodbg); color:var(--good); border:1px solid #aceebb; }
.verdict.bad { background:var(--badbg); color:var(--bad); border:1px solid #ffcecb; }
.lede { font-size:17px; max-width: 62em; margin: 6px 0 0; }
nav { position: sticky; top: 0; background: rgba(255,255,255,.96); border-bottom:1px solid var(--line);
      margin: 18px -32px 0; padding: 8px 32px; z-index: 2; font-size: 13.5px; }
nav a { color: var(--blue); text-decoration:none; margin-right: 16px; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
section { margin-top: 34px; scroll-margin-top: 48px; }
.what { color:var(--muted); margin: 0 0 12px; max-width: 64em; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin: 14px 0 16px; }
.card { border:1px solid var(--line); border-radius:8px; padding: 12px 14px; background: var(--bg); }
.card .label { color:var(--muted); font-size:12.5px; text-transform: uppercase; letter-spacing:.04em; }
.card .value { font-size: 24px; font-weight: 650; margin-top: 2px; }
.card .sub { color:var(--muted); font-size: 13px; }
.card.good .value { color: var(--good); } .card.bad .value { color: var(--bad); }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px 5px 0; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; padding-left: 12px; font-variant-numeric: tabular-nums; }
tr.hl td { background: #eef4ff; font-weight: 600; }
.ok { color: var(--good); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
figure { margin: 8px 0 6px; }
figure img { display:block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background:#fff; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 64em; }
.row { display:flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
.row > figure { flex: 1 1 560px; min-width: 0; }
.row > div { flex: 1 1 320px; min-width: 0; }
.warn { background: var(--badbg); border-left: 4px solid var(--bad); padding: 8px 12px; margin: 10px 0 0; border-radius: 4px;
        font-size: 15px; max-width: 62em; }
.note { background: var(--notebg); border-left: 4px solid var(--noteline); padding: 8px 12px; margin: 8px 0; border-radius: 4px;
        font-size: 14px; max-width: 64em; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--blue); font-size: 14px; }
.kv td:first-child { color: var(--muted); padding-right: 18px; min-width: 9em; }
.kv td + td { min-width: 7em; }
.kv td { word-break: break-word; }
code { background: var(--bg); padding: 1px 5px; border-radius: 4px; font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line); padding-top: 10px; }
"""


def _img(png: bytes | None, alt: str, caption: str = "") -> str:
    if not png:
        return ""
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def _notes(notes: Sequence[str]) -> str:
    return "".join(f'<div class="note">{escape(_stop(n))}</div>' for n in notes if n)


def _stop(text: str) -> str:
    """A note ends with a full stop."""
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], num_cols: Sequence[int] = (), cls: str = "",
           highlight: Sequence[bool] | None = None) -> str:
    th = "".join(f'<th class="num">{escape(h)}</th>' if i in num_cols else f"<th>{escape(h)}</th>" for i, h in enumerate(head))
    body = []
    for r, row in enumerate(rows):
        tds = "".join(f'<td class="num">{escape(str(v))}</td>' if i in num_cols else f"<td>{escape(str(v))}</td>"
                      for i, v in enumerate(row))
        hl = ' class="hl"' if highlight and highlight[r] else ""
        body.append(f"<tr{hl}>{tds}</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>" if head else \
        f"<table{c}><tbody>{''.join(body)}</tbody></table>"


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    return "<table class=\"kv\"><tbody>" + "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows) + "</tbody></table>"


def _section(sid: str, title: str, what: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2><p class="what">{what}</p>{body}</section>'


def render(rr: RunReport, figs: dict[str, bytes | None], fig_notes: dict[str, str]) -> str:
    """The whole page."""
    rep = rr.report
    met = bool(rep.get("budget_met"))
    title = f"{rr.model} on {rr.target}"
    out = [(f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>edgeprune report: {escape(title)}</title><style>{CSS}</style></head><body><main>")]
    out.append('<header><div class="kicker">edgeprune compression report</div>'
               f"<h1>{escape(title)}</h1>"
               f'<div class="verdict {"ok" if met else "bad"}">{"✓ Budget met" if met else "✗ Budget missed"}: '
               f"{escape(str(rep.get('budget', '?')))}</div>"
               f'<p class="lede">{escape(S.headline(rr))}</p>'
               + "".join(f'<div class="warn">{escape(w)}</div>' for w in S.warnings(rr)) + "</header>")
    out.append("<nav>" + "".join(f'<a href="#{sid}">{escape(t)}</a>' for sid, t in SECTIONS) + "</nav>")
    out.append(_summary(rr))
    out.append(_budget(rr))
    out.append(_latency(rr, figs, fig_notes))
    out.append(_channels(rr, figs, fig_notes))
    out.append(_precision(rr, figs, fig_notes))
    out.append(_pareto(rr, figs, fig_notes))
    out.append(_predictor(rr, figs, fig_notes))
    out.append(_importance(rr))
    out.append(_run(rr))
    from edgeprune import __version__

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"<footer>Written by edgeprune {escape(__version__)} on {now} from {escape(str(rr.run_dir))}/report.json. "
               f"Regenerate with <code>edgeprune report {escape(str(rr.run_dir))}</code>.</footer>")
    out.append("</main></body></html>\n")
    return "".join(out)


def _summary(rr: RunReport) -> str:
    rep = rr.report
    cards = []
    for what, dense, comp, change in S.figures(rr):
        cls = ""
        if what.startswith("latency"):
            cls = "good" if "faster" in change else "bad"
            cards.append(("speed-up", change.replace("x faster", "×").replace("x slower", "× slower"), f"{dense} → {comp}", cls))
        elif what.startswith("top-1"):
            v = S.num(change.split()[0])
            cls = "good" if v is not None and v >= -0.5 else "bad" if v is not None and v < -2 else ""
            cards.append(("top-1 change", change, f"{dense} → {comp}", cls))
        else:
            cards.append((what, change.replace("x", "×"), f"{dense} → {comp}", ""))
    html = '<div class="cards">' + "".join(
        f'<div class="card {c}"><div class="label">{escape(lbl)}</div><div class="value">{escape(v)}</div>'
        f'<div class="sub">{escape(sub)}</div></div>' for lbl, v, sub, c in cards) + "</div>"
    v = S.verify_line(rr)
    if v:
        passed = (rep.get("verify") or {}).get("passed")
        html += f'<p class="{"ok" if passed else "bad" if passed is False else ""}">{escape(v)}</p>'
    html += _notes(rr.notes)
    return _section("summary", "Summary", "The dense (original) model against the compressed one. Latency is measured on "
                    "the target, dense and compressed interleaved; accuracy is top-1 on the held-out images.", html)


def _budget(rr: RunReport) -> str:
    if rr.budget:
        rows = [(b.name, b.value, b.limit, "met" if b.met else b.status.replace("MISSED", "missed")) for b in rr.budget]
        body = "<table><thead><tr><th>limit</th><th class=\"num\">compressed</th><th class=\"num\">budget</th>" \
               "<th>result</th></tr></thead><tbody>" + "".join(
                   f"<tr><td>{escape(a)}</td><td class=\"num\">{escape(b)}</td><td class=\"num\">{escape(c)}</td>"
                   f"<td class=\"{'ok' if bl.met else 'bad'}\">{'✓ ' if bl.met else '✗ '}{escape(d)}</td></tr>"
                   for (a, b, c, d), bl in zip(rows, rr.budget)) + "</tbody></table>"
    else:
        body = _notes(["report.json lists no budget lines"])
    margin = (rr.report.get("config") or {}).get("margin")
    extra = f" The planner aims at {margin:.0%} of a latency limit, because measured latency is noisy." if S.num(margin) else ""
    return _section("budget", "Budget", f"Every limit of the budget <code>{escape(str(rr.report.get('budget', '?')))}</code>, "
                    "resolved to absolute numbers, checked on the final measurement." + extra, body)


def _latency(rr: RunReport, figs: dict[str, bytes | None], notes: dict[str, str]) -> str:
    body = []
    for tl in rr.latency:
        key = f"latency:{tl.target}"
        cap = (f"Each layer's latency predicted from the profile <code>{escape(tl.profile)}</code> "
               f"(isolated layer timings, before the whole-model calibration) for its dense and compressed shape.")
        body.append(_img(figs.get(key), f"per-layer latency on {tl.target}", cap))
        rows = []
        if tl.dense_total is not None:
            rows.append(("predicted whole model (calibrated)", S.ms(tl.dense_total) if tl.unit == "ms" else f"{tl.dense_total:,.0f}",
                         S.ms(tl.compressed_total) if tl.unit == "ms" else f"{tl.compressed_total:,.0f}"))
        if tl.dense_measured is not None:
            rows.append(("measured whole model", S.ms(tl.dense_measured), S.ms(tl.compressed_measured)))
        if rows:
            body.append(_table(["", "dense", "compressed"], rows, num_cols=(1, 2)))
        if notes.get(key):
            body.append(_notes([notes[key]]))
    body.append(_notes(rr.latency_notes))
    return _section("latency", "Latency per layer", "Where the time goes, layer by layer, before and after compression, on "
                    "each target the plan priced.", "".join(body))


def _channels(rr: RunReport, figs: dict[str, bytes | None], notes: dict[str, str]) -> str:
    body = [_img(figs.get("channels"), "channels kept per layer",
                 "Output channels of every conv/linear layer. Layers coupled by a residual connection share one channel "
                 "group and so keep the same channels.")]
    if rr.groups:
        rows = [(gid, size, kept, f"{kept / size:.0%}" if size else "n/a") for gid, size, kept in rr.groups]
        body.append("<details><summary>channel groups (the planner's decision variables)</summary>"
                    + _table(["group", "dense", "kept", "share"], rows, num_cols=(1, 2, 3)) + "</details>")
    if rr.layers:
        rows = [(r.name, r.op, f"{r.dense_in} → {r.kept_in}", f"{r.dense_out} → {r.kept_out}",
                 f"{S.human(r.dense_macs)} → {S.human(r.macs)}") for r in rr.layers]
        body.append("<details><summary>every layer</summary>"
                    + _table(["layer", "op", "in channels", "out channels", "MACs"], rows, num_cols=(2, 3, 4)) + "</details>")
    body.append(_notes([notes.get("channels", ""), rr.layers_note]))
    return _section("channels", "Channels kept", "What the planner removed: channels are physically removed (smaller tensors, "
                    "not masks).", "".join(body))


def _precision(rr: RunReport, figs: dict[str, bytes | None], notes: dict[str, str]) -> str:
    body = [_img(figs.get("precision"), "precision per layer")]
    if rr.layers:
        from collections import Counter

        cnt = Counter(r.dtype for r in rr.layers)
        body.append("<p>" + escape(", ".join(f"{n} layer{'s' if n != 1 else ''} {dt}" for dt, n in cnt.most_common())) + ".</p>")
    body.append(_notes([notes.get("precision", "")]))
    return _section("precision", "Precision", "The number format of each layer's weights and arithmetic (fp32, fp16, int8, "
                    "int4), as planned.", "".join(body))


def _pareto(rr: RunReport, figs: dict[str, bytes | None], notes: dict[str, str]) -> str:
    body = []
    rows = [(c.label, S.latency(c.latency_ms, rr.report), "not evaluated" if c.top1 is None else f"{c.top1:.2f}%") for c in rr.candidates]
    table = _table(["model", "latency", "top-1"], rows, num_cols=(1, 2),
                   highlight=[c.kind == "chosen" for c in rr.candidates]) if rows else ""
    body.append(f'<div class="row">{_img(figs.get("pareto"), "accuracy vs latency")}<div>{table}</div></div>')
    body.append(_notes([notes.get("pareto", "")] + rr.candidates_notes))
    return _section("pareto", "Accuracy vs latency", "Every model the run evaluated, by measured latency and top-1. "
                    "Up and to the left is better; the frontier joins the models nothing else beats on both.", "".join(body))


def _predictor(rr: RunReport, figs: dict[str, bytes | None], notes: dict[str, str]) -> str:
    body = []
    side = ""
    if rr.audit:
        side = "<h3>Audit of the predictor</h3>" + _kv(S.audit_rows(rr.audit))
        side += (f'<p class="what">From <code>{escape(rr.audit_profile)}</code>: random pruned models measured whole and '
                 "compared with the prediction. An error not clearly above the test-retest spread says more about the "
                 "machine than about the predictor.</p>")
    this = sorted((p for p in rr.pred_points if p.kind == "this run"), key=lambda p: "attempt" in p.label)
    if this:
        side += "<h3>This run</h3>" + _table(["model", "predicted", "measured", "error"],
                                              [(p.label.replace("this run: ", ""), f"{p.predicted:.3g}", f"{p.measured:.3g}",
                                                f"{p.error:+.1%}") for p in this], num_cols=(1, 2, 3))
    img = _img(figs.get("predictor"), "predicted vs measured latency",
               "Each point is one whole model. Inside the green band the prediction is within ±5% of the measurement.")
    if img or side:
        body.append(f'<div class="row">{img}<div>{side}</div></div>')
    body.append(_notes([notes.get("predictor", "")] + rr.pred_notes))
    return _section("predictor", "Predicted vs measured latency", "How far the latency model the planner relies on can be "
                    f"trusted on {escape(rr.pred_target or rr.target)}.", "".join(body))


def _importance(rr: RunReport) -> str:
    if rr.oracle:
        crit = rr.criterion
        rows = S.oracle_rows(rr)
        body = _table(["criterion", "Spearman ρ vs oracle", "top-k overlap", "bottom-k overlap"], rows, num_cols=(1, 2, 3),
                      highlight=[r[0] == crit for r in rows])
        if crit:
            body += f"<p>This run scored channels with <b>{escape(crit)}</b> (highlighted).</p>"
    else:
        body = _notes([rr.oracle_note])
    return _section("importance", "Importance criterion", "How well the channel-importance criterion ranks channels like the "
                    "oracle (remove one channel, measure the loss change): a Spearman correlation of 1 ranks exactly like "
                    "the oracle, 0 is no better than random.", body)


def _run(rr: RunReport) -> str:
    return _section("run", "Run details", "What produced these numbers.", _kv(S.run_rows(rr)))
