"""Stage functions below the workflow: determinism and storage round trips."""
import numpy as np
import pytest
import torch

from advpipe.pipeline.attack import stored_images
from advpipe.pipeline.represent import eval_tables
from advpipe.runtime import derive_seed
from conftest import trained_digits_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_is_bit_identical_for_a_seed():
    a, _, _ = trained_digits_cnn(seed=1)
    b, _, _ = trained_digits_cnn(seed=1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_quantised_images_stored_as_uint8_exactly():
    x = torch.randint(0, 256, (4, 1, 8, 8)).float().div(255).numpy()
    stored = stored_images(x)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored.astype(np.float32) / np.float32(255), x)
    off_grid = x + np.float32(1e-3) * (x < 0.5)
    assert stored_images(off_grid).dtype == np.float32


def test_eval_tables():
    label = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    evaluation, confusion = eval_tables(label, pred, ["a", "b", "c"])
    assert evaluation.to_dict("records") == [{"correct": 4, "total": 6, "accuracy": 4 / 6}]
    np.testing.assert_array_equal(confusion.to_numpy(), [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "train", "cnn") == derive_seed(0, "train", "cnn")
    assert len({derive_seed(0, "attack", "cnn", a) for a in ("fgsm", "bim", "cw")}) == 3
    # Stable across processes and Python versions (sha256, not hash()).
    assert derive_seed(0, "train", "cnn") == int.from_bytes(
        __import__("hashlib").sha256(b"0/train/cnn").digest()[:4], "little")
