"""``edgeprune.example_input``: the one builder of an example input (data, then shape, then a guess, else an error)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgeprune
from edgeprune.data import Dataset, ImageSet
from edgeprune.errors import BadInput
from edgeprune.graph import example_input


def _images(n: int, h: int = 12, w: int = 10, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), np.arange(n) % 10)


def _conv_model(cin: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_public_name():
    assert edgeprune.example_input is example_input


def test_from_a_dataset_takes_the_first_test_image():
    ds = Dataset("toy", train=_images(5, seed=1), test=_images(4, seed=2))
    x = example_input(_conv_model(), ds, shape=(1, 3, 32, 32))  # data wins over shape and the guess
    assert torch.equal(x, ds.test.example(1)) and x.shape == (1, 3, 12, 10)


def test_from_an_image_set():
    s = _images(3)
    assert torch.equal(example_input(None, s), s.example(1))


def test_from_batches_takes_one_sample_of_the_first_batch():
    b1, b2 = torch.randn(8, 3, 5, 5), torch.randn(8, 3, 5, 5)
    x = example_input(None, [(b1, torch.zeros(8)), (b2, torch.zeros(8))])
    assert torch.equal(x, b1[:1])
    gen = ((torch.full((4, 2), float(i)), None) for i in range(3))  # any iterable, read up to its first batch
    assert torch.equal(example_input(None, gen), torch.zeros(1, 2))


def test_bad_data_is_one_line():
    with pytest.raises(BadInput, match="cannot take an example input from int") as err:
        example_input(None, 3)
    assert "\n" not in str(err.value)
    with pytest.raises(BadInput, match="cannot take an example input"):
        example_input(None, [])


def test_from_a_shape_is_seeded_noise():
    x = example_input(_conv_model(), shape=(1, 3, 16, 20))
    assert x.shape == (1, 3, 16, 20) and x.std() > 0.5
    assert torch.equal(x, example_input(None, shape=[1, 3, 16, 20]))  # the same tensor every call
    with pytest.raises(BadInput, match="positive integers"):
        example_input(None, shape=(1, 0, 4))


def test_guessed_from_the_model():
    assert torch.equal(example_input(_conv_model(cin=5)), torch.zeros(1, 5, 32, 32))
    assert torch.equal(example_input(nn.Sequential(nn.Linear(7, 3))), torch.zeros(1, 7))


def test_nothing_to_go_on_asks_for_an_input_shape():
    for model in (None, nn.Sequential(nn.ReLU())):
        with pytest.raises(BadInput, match="data or an input shape") as err:
            example_input(model)
        assert "\n" not in str(err.value)
