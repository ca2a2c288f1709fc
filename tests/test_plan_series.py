"""The measured re-planning loop says how every precision series ended, an empty one included (issue #24)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeprune.errors import BadInput, BudgetMissed
from edgeprune.pipeline import search as S


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        self.lines.append(text)


def _search(monkeypatch, fail):
    run = SimpleNamespace(margin=0.95, config=SimpleNamespace(max_attempts=4, time_limit=10.0), ui=_Log())
    s = S._MilpSearch(run, pred=None, pred_dense=1.0, to_pred=1.0, limits={"latency": 1.0})
    monkeypatch.setattr(s, "solve", lambda precs, scale: (_ for _ in ()).throw(fail))
    return s, run.ui


def test_an_empty_int8_series_says_why(monkeypatch):
    s, ui = _search(monkeypatch, BudgetMissed("smallest predicted latency on cpu-ort is 2 ms, budget is 1 ms"))
    s.run_series(["int8"], True, (None, 1.0), extra=True)
    assert s.series == [{"precisions": ["int8"], "plans": 0,
                         "ended": "no plan meets the limit (smallest predicted latency on cpu-ort is 2 ms, budget is 1 ms)"}]
    assert len(ui.lines) == 1 and "every layer int8" in ui.lines[0] and "no plan" in ui.lines[0]


def test_an_extra_series_the_table_cannot_price_is_skipped_with_a_message(monkeypatch):
    s, ui = _search(monkeypatch, BadInput("the predictor for cpu-ort cannot price a layer that no choice changes"))
    s.run_series(["int8"], True, (None, 1.0), extra=True)
    assert s.series[0]["plans"] == 0 and "cannot price" in s.series[0]["ended"] and "cannot price" in ui.lines[0]
    with pytest.raises(BadInput):  # the first series is the run's own: its bad input still fails the run
        s.run_series(["fp32", "int8"], True, (None, 1.0))
