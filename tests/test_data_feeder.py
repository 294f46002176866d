"""The on-device feeder against a plain NumPy implementation of InfoGCN's feeder operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dataspec import load_spec
from trainer.data.feeder import Augmentation, GPUFeeder, draw_augmentation
from trainer.data.store import PreparedStore

SPEC = load_spec("ntu120")
LENGTHS = [1, 7, 40, 64, 65, 150, 300, 23, 90, 64, 12, 200]


@pytest.fixture(scope="module")
def store() -> PreparedStore:
    rng = np.random.default_rng(0)
    samples = [rng.normal(0, 0.5, (n, 2, 25, 3)).astype(np.float32) for n in LENGTHS]
    return PreparedStore.from_arrays(SPEC, samples, rng.integers(0, 120, len(LENGTHS)))


def numpy_rotation(angles: np.ndarray) -> np.ndarray:
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def numpy_reference(sample, begin, length, angles, window, modalities) -> np.ndarray:
    """One sample, InfoGCN style: C,T,V,M; crop, linear resize (half-pixel centres), rotate, modalities."""
    data = sample[begin : begin + length].transpose(3, 0, 2, 1).astype(np.float64)  # C, L, V, M
    pos = np.clip((np.arange(window) + 0.5) * length / window - 0.5, 0, length - 1)
    out = np.apply_along_axis(lambda s: np.interp(pos, np.arange(length), s), 1, data)
    if angles is not None:
        out = np.einsum("ij,jtvm->itvm", numpy_rotation(angles), out)
    parents = np.arange(25)
    for child, parent in SPEC.edges:
        parents[child] = parent
    bone = out - out[:, :, parents]
    parts = []
    for name in modalities:
        base = out if name in ("joint", "motion") else bone
        if name.endswith("motion"):
            moved = np.zeros_like(base)
            moved[:, :-1] = base[:, 1:] - base[:, :-1]
            base = moved
        parts.append(base)
    return np.concatenate(parts, axis=0)


@pytest.mark.parametrize("train", [True, False])
def test_transform_matches_numpy_reference(store: PreparedStore, train: bool) -> None:
    modalities = ("joint", "bone", "motion", "bone_motion")
    feeder = GPUFeeder(store, np.arange(len(store)), device="cpu", train=train, modalities=modalities)
    rows = np.arange(len(store))
    aug = draw_augmentation(np.random.default_rng(5), feeder.lengths, train=train)
    x = feeder.transform(rows, aug).numpy()
    assert x.shape == (len(store), 12, 64, 25, 2) and x.dtype == np.float32
    for b in rows:
        angles = None if aug.angles is None else aug.angles[b]
        ref = numpy_reference(store.sample(b), aug.begin[b], aug.length[b], angles, 64, modalities)
        np.testing.assert_allclose(x[b], ref, atol=2e-5, err_msg=f"sample {b} (length {LENGTHS[b]})")


def test_resize_is_infogcn_bilinear_interpolate(store: PreparedStore) -> None:
    feeder = GPUFeeder(store, [5], device="cpu", train=False)
    aug = Augmentation(np.array([10]), np.array([97]), None)
    x = feeder.transform(np.array([0]), aug)[0]
    crop = torch.tensor(store.sample(5)[10:107], dtype=torch.float64).permute(3, 0, 2, 1)  # C, L, V, M
    c, length, v, m = crop.shape
    flat = crop.permute(0, 2, 3, 1).reshape(1, 1, c * v * m, length)
    resized = F.interpolate(flat, size=(c * v * m, 64), mode="bilinear", align_corners=False)
    expected = resized.view(c, v, m, 64).permute(0, 3, 1, 2)
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=0)


def test_crop_draws_follow_the_reference_rules() -> None:
    lengths = np.array([1, 30, 64, 100, 128, 300] * 200)
    aug = draw_augmentation(np.random.default_rng(1), lengths, train=True)
    low = np.minimum(np.maximum(np.floor(lengths * 0.5), 64), lengths)
    assert (aug.length >= low).all() and (aug.length <= lengths).all()
    assert (aug.begin >= 0).all() and (aug.begin + aug.length <= lengths).all()
    assert np.abs(aug.angles).max() <= 0.3 and aug.angles.std() > 0.1
    assert len(set(aug.length[lengths == 300].tolist())) > 50
    ev = draw_augmentation(np.random.default_rng(1), lengths, train=False)
    bias = ((1 - 0.95) * lengths / 2).astype(int)
    assert (ev.begin == bias).all() and (ev.length == lengths - 2 * bias).all() and ev.angles is None


def test_epochs_are_seeded_and_cover_the_subset(store: PreparedStore) -> None:
    subset = np.array([0, 2, 3, 5, 6, 7, 8, 9, 11])
    make = lambda seed: GPUFeeder(store, subset, device="cpu", train=True, seed=seed)  # noqa: E731
    a, b = make(7), make(7)
    batches_a = list(a.epoch_batches(4, epoch=3))
    batches_b = list(b.epoch_batches(4, epoch=3))
    assert a.num_batches(4) == len(batches_a) == 2  # drop_last on train
    for (xa, ya, ia), (xb, yb, ib) in zip(batches_a, batches_b, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ya, yb) and torch.equal(ia, ib)
        assert torch.equal(ya, torch.as_tensor(store.labels[ia.numpy()]))
    other = list(a.epoch_batches(4, epoch=4))
    assert not torch.equal(other[0][0], batches_a[0][0])
    assert not torch.equal(list(make(8).epoch_batches(4, epoch=3))[0][0], batches_a[0][0])
    seen = torch.cat([i for _, _, i in a.epoch_batches(4, epoch=0)]).tolist()
    assert len(set(seen)) == 8 and set(seen) <= set(subset.tolist())


def test_eval_is_ordered_complete_and_unrotated(store: PreparedStore) -> None:
    feeder = GPUFeeder(store, [1, 4, 6, 10, 11], device="cpu", train=False, persons=1)
    batches = list(feeder.epoch_batches(2, epoch=0))
    assert feeder.num_batches(2) == len(batches) == 3
    ids = torch.cat([i for _, _, i in batches]).tolist()
    assert ids == [1, 4, 6, 10, 11]
    x = batches[0][0]
    assert x.shape == (2, 3, 64, 25, 1)
    again = next(iter(feeder.epoch_batches(2, epoch=9)))[0]
    torch.testing.assert_close(x, again, rtol=0, atol=0)  # eval ignores the epoch


def test_rotation_keeps_bone_lengths(store: PreparedStore) -> None:
    train = GPUFeeder(store, [6], device="cpu", train=True, modalities=("bone",))
    plain = GPUFeeder(store, [6], device="cpu", train=True, modalities=("bone",), rotation=0.0)
    aug = draw_augmentation(np.random.default_rng(2), train.lengths, train=True)
    still = Augmentation(aug.begin, aug.length, None)
    rotated = train.transform(np.array([0]), aug)
    unrotated = plain.transform(np.array([0]), still)
    assert not torch.allclose(rotated, unrotated)
    torch.testing.assert_close(rotated.norm(dim=1), unrotated.norm(dim=1), atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_clear(store: PreparedStore) -> None:
    with pytest.raises(ValueError, match="unknown modalities"):
        GPUFeeder(store, [0], device="cpu", train=True, modalities=("velocity",))
    with pytest.raises(ValueError, match="at least one sample"):
        GPUFeeder(store, [], device="cpu", train=True)
