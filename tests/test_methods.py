"""The literature methods (edgeprune.methods), each reproducing its paper's qualitative claim at small scale.

Tiny residual CNN on a learnable synthetic 16x16 image set (tests.tiny): the
whole file runs in well under the 3-minute budget on one shared core.
"""
from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.data import load_data
from edgeprune.errors import BadInput, BudgetMissed
from edgeprune.metrics import count_params, evaluate
from tests.tiny import tiny_net, tiny_npz

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(tiny_npz(tmp_path_factory.mktemp("methods") / "tiny.npz", n=600))


@pytest.fixture(scope="module")
def trained(data):
    """The tiny net trained briefly (a 'pretrained' model to compress)."""
    from edgeprune.methods._train import sgd_loop

    m = tiny_net()
    sgd_loop(m, data, 120, lr=0.05, batch_size=32, seed=0)
    return m.eval()


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- deep compression


def test_huffman_roundtrip_and_optimality():
    from edgeprune.methods import huffman

    rng = np.random.default_rng(0)
    for alphabet in (1, 2, 7, 32, 256):
        sym = rng.geometric(0.25, size=3000) % alphabet
        counts = np.bincount(sym, minlength=alphabet)
        lens = huffman.code_lengths(counts)
        data, nbits = huffman.encode(sym, lens)
        assert np.array_equal(huffman.decode(data, nbits, lens, len(sym)), sym)
        assert nbits == int((lens * counts).sum())
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log2(p)).sum())
        assert nbits / len(sym) <= entropy + 1.0 + 1e-9  # Huffman is within one bit of the entropy
        if alphabet > 1:
            assert (2.0 ** -lens[lens > 0]).sum() == pytest.approx(1.0)  # a complete prefix code


def test_deep_compression_large_ratio_small_loss_exact_file(trained, data, tmp_path):
    from edgeprune.methods.deep_compression import deep_compress, load_compressed, read_header

    dense_acc = evaluate(trained, data.test)
    res = deep_compress(trained, data, ratio=12, bits=4, prune_steps=40, share_steps=20, lr=0.02, batch_size=32,
                        out=tmp_path)
    assert res.stored_bytes <= res.dense_bytes / 12 and res.ratio >= 12
    assert res.sparsity > 0.7
    assert res.accuracy["final"] >= dense_acc - 8.0, res.accuracy  # large ratio, small loss
    assert "not latency" in " ".join(res.notes)
    path = tmp_path / "model.epdc"
    assert path.stat().st_size == res.stored_bytes
    header, _ = read_header(path)
    assert header["format"] == "edgeprune-deep-compression" and any("not latency" in n for n in header["notes"])
    assert all(l["kind"] == "shared" and l["alphabet"] <= 16 for l in header["layers"])
    loaded = load_compressed(path, tiny_net())
    assert _same_state(loaded, res.model)  # bit-exact
    assert evaluate(loaded, data.test) == res.accuracy["final"]


def test_deep_compression_budget_and_any_model(tmp_path):
    from edgeprune.methods.deep_compression import deep_compress, load_compressed, save_compressed

    m = tiny_net()
    n = save_compressed(m, tmp_path / "dense.epdc")  # not shared: kept values stored raw, still exact
    assert n == (tmp_path / "dense.epdc").stat().st_size
    assert _same_state(load_compressed(tmp_path / "dense.epdc", tiny_net()), m)
    res = deep_compress(m, None, target_bytes=9000, bits=3)  # no data: no retraining
    assert res.stored_bytes <= 9000
    with pytest.raises(BudgetMissed, match="smallest file"):
        deep_compress(m, None, target_bytes=500)
    (tmp_path / "bad.epdc").write_bytes(b"not a model")
    with pytest.raises(BadInput, match="not an edgeprune deep-compression file"):
        load_compressed(tmp_path / "bad.epdc", tiny_net())
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(BadInput):
        load_compressed(tmp_path / "dense.epdc", other)


# --------------------------------------------------------------------------- low rank


def test_lowrank_full_rank_exact_and_graceful(trained, data):
    from edgeprune.methods.lowrank import factorize, full_rank

    x = data.test.example(64)
    with torch.no_grad():
        ref = trained(x)
    layers = ["conv2", "conv3", "conv4", "fc"]
    mods = dict(trained.named_modules())
    full = factorize(trained, {n: full_rank(mods[n]) for n in layers})
    with torch.no_grad():
        assert torch.allclose(full(x), ref, atol=1e-4, rtol=1e-4)
    assert isinstance(full.conv2, nn.Sequential) and full.conv2[0].out_channels == full_rank(mods["conv2"])
    errs = []
    for frac in (1.0, 0.75, 0.5, 0.25, 0.125):
        m = factorize(trained, {"conv3": max(1, int(32 * frac))}, energy_transfer="none")
        with torch.no_grad():
            errs.append(float((m(x) - ref).norm() / ref.norm()))
    assert errs[0] < 1e-5 and all(a <= b + 1e-6 for a, b in itertools.pairwise(errs))  # error grows as rank falls
    assert errs[1] < 0.5 * errs[-1]  # gracefully: a small cut costs little


def test_energy_transfer_keeps_energy_and_gradient_truncation_keeps_least_squares():
    """LRPET's claim: the projection's energy loss (and the vanishing gradient it causes) is undone by energy
    transfer. Eckart-Young's: plain truncation is the least-squares optimum of the layer's own output."""
    from edgeprune.methods.lowrank import factorized_layer, svd_factors

    torch.manual_seed(0)
    depth, width, rank = 6, 64, 16
    dense = [nn.Linear(width, width, bias=False) for _ in range(depth)]
    x = torch.randn(512, width)
    results = {}
    for et in ("none", "uniform", "scale"):
        layers = [factorized_layer(l, rank, et) for l in dense]
        a, b, s = svd_factors(dense[0], rank, et)
        results[et] = {"energy": float(((b @ a) ** 2).sum() / (s**2).sum()),
                       "layer_err": float((layers[0](x) - dense[0](x)).detach().pow(2).mean())}
        inp = x.clone().requires_grad_(True)
        h = inp
        for l in layers:
            h = l(h)
        h.pow(2).sum().backward()
        results[et]["grad"] = float(inp.grad.norm())
    inp = x.clone().requires_grad_(True)
    h = inp
    for l in dense:
        h = l(h)
    h.pow(2).sum().backward()
    dense_grad = float(inp.grad.norm())
    assert results["none"]["energy"] < 0.7
    for et in ("uniform", "scale"):
        assert results[et]["energy"] == pytest.approx(1.0, rel=1e-4)
        # the gradient reaching the input: truncation loses orders of magnitude, energy transfer much less
        assert abs(np.log(results[et]["grad"] / dense_grad)) < 0.5 * abs(np.log(results["none"]["grad"] / dense_grad))
        assert results["none"]["layer_err"] < results[et]["layer_err"]  # the price: a larger per-layer error


def test_lowrank_rank_options_are_priced_like_channel_counts(trained, data):
    from edgeprune.methods.lowrank import factorize, macs_cost, rank_options, rank_signatures
    from edgeprune.metrics import count_macs

    x = data.test.example(1)
    opts = rank_options(trained, ["conv3", "fc"], ranks=[4, 8, 16], cost=macs_cost, example=x)
    dense, *ranked = opts["conv3"]
    assert dense.rank is None and dense.energy == 1.0 and [o.rank for o in ranked] == [4, 8, 16]
    assert all(len(o.signatures) == 2 and o.cost < dense.cost and 0 < o.energy < 1 for o in ranked)
    assert [o.energy for o in ranked] == sorted(o.energy for o in ranked)
    first, second = ranked[1].signatures
    assert (first.out_channels, second.in_channels, second.kernel, first.post) == (8, 8, (1, 1), "")
    assert second.post == dense.signatures[0].post
    # the signatures' MACs are the factorised model's MACs
    m = factorize(trained, {"conv3": 8})
    assert count_macs(trained, x) - count_macs(m, x) == dense.macs - ranked[1].macs
    a, b = rank_signatures(dense.signatures[0], 8)
    assert (a, b) == (first, second)


# --------------------------------------------------------------------------- sparse training


@pytest.mark.parametrize("method", ["rigl", "scl"])
def test_sparse_training_reaches_target_and_trains(method, data):
    from edgeprune.methods.sparse_training import train_sparse

    chance = 100.0 / 10
    res = train_sparse(tiny_net(), data, method, sparsity=0.8, steps=90, batch_size=32, lr=0.05, delta_t=10,
                       init="random", seed=0)
    assert res.sparsity == pytest.approx(0.8, abs=0.005)
    weights = [m.weight for n, m in res.model.named_modules() if n in res.masks]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros >= 0.8 - 0.005  # the model really is that sparse
    assert res.losses[-1] < 0.75 * res.losses[0]
    assert res.accuracy > chance + 15, res.to_dict()
    assert "not latency" in res.notes[0]
    if method == "rigl":
        assert res.extra["updates"] > 0 and res.extra["connections_moved"] > 0
    else:
        assert 0.5 < res.extra["learned_sparsity"] < 0.99


def test_rigl_update_keeps_count_and_schedule():
    from edgeprune.methods.sparse_training import layer_densities, rigl_drop_fraction, rigl_update

    torch.manual_seed(0)
    w, g = torch.randn(20, 30), torch.randn(20, 30)
    mask = torch.rand(20, 30) < 0.3
    w = w * mask
    new, k = rigl_update(w, g, mask, 0.3)
    assert int(new.sum()) == int(mask.sum()) and k == int(0.3 * int(mask.sum()))
    grown = new & ~mask
    assert int(grown.sum()) == k and float(g.abs()[grown].min()) >= float(g.abs()[~new & ~mask].max())
    assert rigl_drop_fraction(0, 100) == pytest.approx(0.3) and rigl_drop_fraction(100, 100) == 0.0
    layers = dict(tiny_net().named_modules())
    layers = {n: layers[n] for n in ("conv1", "conv2", "conv4", "fc")}
    dens = layer_densities(layers, 0.8, "erk")
    total = sum(m.weight.numel() for m in layers.values())
    assert sum(dens[n] * layers[n].weight.numel() for n in layers) == pytest.approx(0.2 * total)
    assert dens["conv1"] > dens["conv4"]  # ERK: small layers stay denser


# --------------------------------------------------------------------------- SNIP and rethinking


def test_snip_keeps_the_specified_fraction(data):
    from edgeprune.methods.snip_init import connection_sensitivity, snip_prune

    m = tiny_net()
    for keep in (0.05, 0.2, 0.5):
        pruned, masks = snip_prune(m, data, keep=keep, batch_size=64)
        total = sum(v.numel() for v in masks.values())
        assert sum(int(v.sum()) for v in masks.values()) == round(keep * total)
        for name, mask in masks.items():
            assert torch.all(dict(pruned.named_modules())[name].weight[~mask] == 0)
    x, y = next(data.train.batches(64))
    sens = connection_sensitivity(m, x, y)
    assert sum(float(s.sum()) for s in sens.values()) == pytest.approx(1.0)
    _, masks = snip_prune(m, (x, y), keep=0.1)
    flat_s = torch.cat([s.flatten() for s in sens.values()])
    flat_m = torch.cat([v.flatten() for v in masks.values()])
    assert float(flat_s[flat_m].min()) >= float(flat_s[~flat_m].max())  # the kept ones are the most sensitive
    assert _same_state(m, tiny_net())  # the input model is untouched


def test_rethinking_returns_both_accuracies(trained, data):
    from edgeprune.methods.rethinking import scratch_vs_finetune

    out = scratch_vs_finetune(trained, data, keep=0.5, finetune_steps=20, batch_size=32)
    for k in ("finetune_top1", "scratch_top1", "dense_top1", "pruned_top1_before"):
        assert 0.0 <= out[k] <= 100.0
    assert out["params_pruned"] < out["params_dense"] and out["scratch_steps"] == out["finetune_steps"] == 20
    assert out["winner"] in ("finetune", "scratch")


# --------------------------------------------------------------------------- slimming and iterative


def test_slimming_pushes_bn_scales_down_and_prunes(trained, data):
    from edgeprune.methods.slimming import scale_stats, slim, sparsity_train

    plain = sparsity_train(copy.deepcopy(trained), data, l1=0.0, epochs=4, lr=0.05, batch_size=32, max_images=256)
    l1 = sparsity_train(copy.deepcopy(trained), data, l1=0.1, epochs=4, lr=0.05, batch_size=32, max_images=256)
    assert scale_stats(l1)["mean"] < 0.75 * scale_stats(plain)["mean"]
    res = slim(trained, data, l1=0.1, epochs=2, prune_ratio=0.5, finetune_epochs=0.5, lr=0.05, batch_size=32,
               max_images=256)
    assert res.scales_after["mean"] < res.scales_before["mean"]
    assert res.params[1] < res.params[0] and res.macs[1] < res.macs[0]
    assert sum(k for k, _ in res.kept.values()) < sum(s for _, s in res.kept.values())
    assert count_params(res.model) == res.params[1]
    assert set(res.accuracy) == {"dense", "l1_trained", "pruned", "finetuned"}


def test_iterative_curve(trained, data):
    from edgeprune.methods.iterative import iterative_prune

    res = iterative_prune(trained, data, budget="macs=0.5x", steps=3, criterion="l1", finetune_epochs=0.2,
                          batch_size=32, score_batches=2)
    curve = res.curve
    assert [p["cycle"] for p in curve] == [0, 1, 2, 3]
    macs = [p["macs"] for p in curve]
    assert all(a > b for a, b in itertools.pairwise(macs)) and macs[-1] <= 0.5 * macs[0] * 1.001
    assert all(p["top1"] is not None for p in curve)
    assert curve[-1]["predicted_macs"] == pytest.approx(macs[-1] / 1e6, rel=0.05)


# --------------------------------------------------------------------------- CLI


def test_cli_methods_list_and_deep_compress(tmp_path, data, capsys):
    from edgeprune.cli import main

    assert main(["methods", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["methods"]
    assert {"deep-compression", "lowrank", "rigl", "scl", "snip", "rethinking", "iterative", "slimming"} <= {r["name"] for r in rows}
    assert all(r["paper"] and r["when"] for r in rows)
    npz = tiny_npz(tmp_path / "d.npz", n=200)
    code = main(["deep-compress", "--model", "tests.tiny:tiny_net", "--data", npz, "--bytes", "12KB", "--steps", "5",
                 "--share-steps", "0", "--bits", "4", "--out", str(tmp_path / "dc"), "--json", "-q"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["stored_bytes"] <= 12000 and rep["roundtrip_exact"] and "not latency" in rep["latency_note"]
    assert (tmp_path / "dc" / "model.epdc").stat().st_size == rep["stored_bytes"]
    assert main(["deep-compress", "--model", "tests.tiny:tiny_net", "--data", "none", "--out", str(tmp_path / "x")]) == 2
