"""The one data adapter (edgeprune.data.source): DataLoaders, iterables, pairs and the ImageSet fast path feed
importance, recovery, evaluation and verification; inputs may be tuples or dicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgeprune.data import load_data
from edgeprune.data.batch import call_model, take
from edgeprune.data.source import DataSource, as_source
from edgeprune.errors import BadInput
from tests.tiny import tiny_net, tiny_npz


def loaders(n: int = 64, size: int = 16, classes: int = 10, bs: int = 16) -> tuple[DataLoader, DataLoader]:
    """A (train, val) pair of standard DataLoaders over TensorDatasets: float NCHW, int labels."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    return (DataLoader(TensorDataset(x[: n // 2], y[: n // 2]), batch_size=bs, shuffle=True),
            DataLoader(TensorDataset(x[n // 2 :], y[n // 2 :]), batch_size=bs))


class TwoInput(nn.Module):
    """An image and a feature vector in, logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.meta = nn.Linear(4, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, img: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.bn(self.conv(img))).mean((2, 3))
        return self.fc(f + self.meta(meta))


def two_input_batches(n_batches: int = 4, bs: int = 8, as_dict: bool = False) -> list:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n_batches):
        img, meta = torch.randn(bs, 3, 12, 12, generator=g), torch.randn(bs, 4, generator=g)
        x = {"img": img, "meta": meta} if as_dict else (img, meta)
        out.append((x, torch.randint(0, 5, (bs,), generator=g)))
    return out


def test_as_source_accepts_loaders_iterables_pairs_and_the_fast_path(tmp_path) -> None:
    tr, va = loaders()
    pair = as_source((tr, va))
    assert not pair.fast and pair.train is tr and pair.val is va and not pair.same_split
    assert pair.train_size() == 32 and pair.example().shape == (1, 3, 16, 16)
    assert pair.calibration(20).shape == (20, 3, 16, 16)
    assert sum(len(y) for _, y in pair.val_batches(limit=20)) == 20
    one = as_source(tr)
    assert one.same_split
    batches = as_source(two_input_batches())
    assert isinstance(batches.example(), tuple) and batches.example()[1].shape == (1, 4)
    assert len(batches.score_batches(2, 8)) == 2
    fast = as_source(tiny_npz(tmp_path / "d.npz", n=40))
    assert fast.fast and fast.dataset.name == "d" and fast.num_classes() == 10
    ds = load_data(str(tmp_path / "d.npz"))
    assert as_source((ds.train, ds.test)).fast and as_source(ds.train).dataset.test is ds.train
    assert as_source(None) is None and as_source(pair) is pair


def test_a_one_shot_generator_is_refused_with_a_clear_message() -> None:
    gen = ((torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)) for _ in range(3))
    with pytest.raises(BadInput, match="one-shot generator cannot be iterated again"):
        as_source(gen)
    with pytest.raises(BadInput, match="expected a DataLoader"):
        as_source(42)
    tr, _ = loaders()
    with pytest.raises(BadInput, match="two ImageSets or two DataLoaders"):
        as_source((load_data("cifar10-demo").train, tr))


def test_importance_takes_a_dataloader_and_a_loss_fn() -> None:
    from edgeprune.importance import importance

    tr, va = loaders()
    m = tiny_net()
    calls = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(len(y))
        return F.cross_entropy(out, y) * 3.0

    a = importance(m, (tr, va), "fisher", batches=2)
    b = importance(m, tr, "fisher", batches=2, loss_fn=loss_fn)
    assert calls == [16, 16]  # the user's loss ran on each scored batch
    # a loss scaled by 3 scales fisher (squared gradients) by 9: same ranking, 9x the values... but the train
    # loader shuffles, so compare one fixed list of batches instead
    fixed = list(va)
    a, b = importance(m, fixed, "fisher"), importance(m, fixed, "fisher", loss_fn=loss_fn)
    for k in a:
        assert torch.allclose(b[k], 9 * a[k], rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("as_dict", [False, True])
def test_importance_and_prune_a_two_input_model(as_dict: bool) -> None:
    from edgeprune.graph import channel_groups
    from edgeprune.importance import importance
    from edgeprune.prune import prune

    m = TwoInput().eval()
    batches = two_input_batches(as_dict=as_dict)
    scores = importance(m, batches, "taylor", batches=2)
    g = channel_groups(m, take(batches[0][0], 1))
    assert set(scores) == {gr.id for gr in g.prunable} and scores
    gid = next(iter(scores))
    keep = {gid: torch.argsort(scores[gid], descending=True)[:8].sort().values}
    small = prune(m, keep, take(batches[0][0], 1))
    assert call_model(small, batches[0][0]).shape == (8, 5)


def test_recover_on_a_dataloader_with_loss_and_eval_fn() -> None:
    from edgeprune.recover import recover

    tr, va = loaders(n=96)
    m = tiny_net()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    seen = []

    def score(model, batches) -> float:
        seen.append(sum(len(y) for _, y in batches))
        return 1.0

    res = recover(m, (tr, va), teacher=tiny_net(), epochs=1, val_fraction=0.1, eval_fn=score,
                  loss_fn=lambda out, y: F.cross_entropy(out, y))
    assert res.epochs_run == pytest.approx(1.0) and seen == [48]
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(BadInput, match="pass a \\(train, val\\) pair"):
        recover(tiny_net(), tr, epochs=1, val_fraction=0.1)


def test_evaluate_with_eval_fn_and_on_a_loader() -> None:
    from edgeprune.metrics import evaluate, metric_name

    _tr, va = loaders()
    m = tiny_net()
    top1 = evaluate(m, va)
    ref = 100.0 * sum(int((m(x).argmax(1) == y).sum()) for x, y in va) / 32
    assert top1 == pytest.approx(ref)

    def miou(model, batches) -> float:
        return float(sum(len(y) for _, y in batches))

    assert evaluate(m, va, eval_fn=miou, limit=20) == 20.0 and metric_name(miou) == "miou"


class _Noisy:
    """A stand-in engine: the model's outputs plus noise of a given size."""

    runner = object()

    def __init__(self, model: nn.Module, noise: float) -> None:
        self.model, self.noise = model, noise

    def run(self, x) -> np.ndarray:
        with torch.no_grad():
            out = call_model(self.model, torch.as_tensor(x) if isinstance(x, np.ndarray) else
                             tuple(torch.as_tensor(v) for v in x)).numpy()
        return out + self.noise * np.random.default_rng(0).standard_normal(out.shape)


def test_verify_on_random_inputs_gates_on_the_output_error() -> None:
    from edgeprune.pipeline.outcome import RandomImages
    from edgeprune.verify import format_metric, verify

    m = tiny_net()
    example = torch.zeros(1, 3, 16, 16)
    ok = verify(_Noisy(m, 0.0), m, RandomImages(example), limit=20, max_relative_error=1e-3)
    assert ok.passed and ok.random_inputs and ok.engine_top1 is None and "relative error" in ok.gate
    assert "not measured" in ok.summary() and format_metric(ok.engine_top1) == "not measured"
    # large output errors fail even when argmax agreement on noise would look fine
    bad = verify(_Noisy(m, 5.0), m, RandomImages(example), limit=20, max_relative_error=1e-3, min_agreement=0.0)
    assert not bad.passed and bad.relative_error > 1e-3
    # a two-input model verifies on its own batches (no class gate without labelled logits: output error)
    t = TwoInput().eval()
    rep = verify(_Noisy(t, 0.0), t, RandomImages((torch.zeros(1, 3, 12, 12), torch.zeros(1, 4))), limit=8)
    assert rep.passed and rep.images == 8


def test_data_source_interface_is_a_dataclass() -> None:
    one = [(torch.zeros(1, 3), torch.zeros(1))]
    assert DataSource("x", train=one, val=one).same_split and not DataSource("x", train=one, val=list(one)).same_split
