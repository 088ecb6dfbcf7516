"""Label representations (SPEC 3): generators, their CPU-checkable statistics, file labels, speech."""
from __future__ import annotations

import numpy as np
import pytest

from advpipe.labels import (LabelError, label_entropy, label_stats_table, make_labels, pairwise_distances,
                            parse_label_kind, plot_label_images)
from advpipe.labels.speech import CIFAR10_SPEECH_NAMES, espeak_path, mel_filterbank, permute_columns
from system_packages import ensure_debian_packages

# CI (root) installs espeak-ng here; elsewhere the speech tests say what to install.
_no_espeak = ensure_debian_packages(["espeak-ng"], ["espeak-ng"])
needs_espeak = pytest.mark.skipif(espeak_path() is None, reason=_no_espeak or "espeak-ng not installed")


@pytest.mark.parametrize("kind, shape, dtype", [
    ("category", (10, 10), np.float32), ("uniform", (10, 64, 64), np.float32),
    ("random", (10, 64, 64), np.float32), ("composite", (10, 64, 64), np.float32),
    ("lowdim", (10, 10), np.float32), ("normal_dim=30", (10, 30), np.float64),
    ("uniform_gap=0.1", (10, 50), np.float32)])
def test_shapes_and_dtypes(kind, shape, dtype):
    labels = make_labels(kind, 10, 0)
    assert labels.shape == shape and labels.dtype == dtype
    assert np.isfinite(labels).all()


def test_parse_label_kind():
    assert parse_label_kind("category") == ("category", {})
    assert parse_label_kind("normal_dim=10") == ("normal_dim", {"dim": 10})
    assert parse_label_kind("uniform_gap=0.1") == ("uniform_gap", {"gap": 0.1})
    assert parse_label_kind("file=labels/bert.npy") == ("file", {"path": "labels/bert.npy"})
    with pytest.raises(LabelError, match="unknown label kind 'onehot'.*known"):
        parse_label_kind("onehot")
    with pytest.raises(LabelError, match="expected a dimension"):
        parse_label_kind("normal_dim=ten")
    with pytest.raises(LabelError, match="takes no"):
        parse_label_kind("random=3")
    with pytest.raises(LabelError, match="needs a dimension"):
        make_labels("normal_dim", 10, 0)
    with pytest.raises(LabelError, match="bad parameters"):
        make_labels("random", 10, 0, colour=3)


def test_category_is_one_hot_with_table_entropy():
    labels = make_labels("category", 10, 0)
    np.testing.assert_array_equal(labels, np.eye(10))
    assert label_entropy(labels) == pytest.approx(0.469, abs=5e-4)  # table: 0.47
    l1, l2 = pairwise_distances(labels)
    # One-hot rows differ in two places: L1 = 2, L2 = sqrt 2. The table prints 1.41 / 2.0, the two columns
    # swapped for this row only (lowdim, glove, random keep L1 > L2), so the swap is not reproduced.
    assert (l1, l2) == pytest.approx((2.0, np.sqrt(2)))


def test_uniform_values_and_table_stats():
    labels = make_labels("uniform", 10, 0)
    for i in range(10):
        np.testing.assert_allclose(labels[i], i * 80 / 9, rtol=1e-6)
    assert labels.mean() == pytest.approx(40.0, abs=1e-4)
    assert labels.std() == pytest.approx(25.53, abs=5e-3)  # population std over all entries
    assert label_entropy(labels) == 0.0
    # Matrix norms (numpy's ord=1 / ord=2 on 2-D tensors) of constant differences: 64 * mean|i-j| / 9.
    l1, l2 = pairwise_distances(labels)
    assert l1 == pytest.approx(26.07, abs=5e-3) and l2 == pytest.approx(26.07, abs=5e-3)


def test_random_labels_stats_and_determinism():
    labels = make_labels("random", 10, 3)
    assert labels.min() >= 0 and labels.max() <= 80
    assert labels.mean() == pytest.approx(40.0, abs=0.5)
    assert labels.std() == pytest.approx(80 / np.sqrt(12), abs=0.3)  # 23.09
    assert label_entropy(labels) == pytest.approx(12.0, abs=1e-3)    # log2(4096), all distinct
    l1, l2 = pairwise_distances(labels)
    assert l1 == pytest.approx(25.82, rel=0.03) and l2 == pytest.approx(6.35, rel=0.03)  # table row
    np.testing.assert_array_equal(labels, make_labels("random", 10, 3))
    assert not np.array_equal(labels, make_labels("random", 10, 4))
    # Not the global RNG: neither read nor advanced.
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    make_labels("random", 10, 3)
    assert np.random.random() == before


@pytest.mark.parametrize("kind", ["composite", "lowdim", "normal_dim=5", "uniform_gap=1"])
def test_seeded_kinds_are_deterministic(kind):
    np.testing.assert_array_equal(make_labels(kind, 10, 1), make_labels(kind, 10, 1))
    assert not np.array_equal(make_labels(kind, 10, 1), make_labels(kind, 10, 2))


def test_composite_range_and_entropy():
    labels = make_labels("composite", 10, 0)
    for t in labels:
        assert t.min() == pytest.approx(0.0) and t.max() == pytest.approx(80.0)
    assert label_entropy(labels) == pytest.approx(12.0, abs=0.01)  # table: 12.0


def test_lowdim_stats():
    labels = make_labels("lowdim", 10, 0)
    assert labels.min() >= 0 and labels.max() <= 80
    assert label_entropy(labels) == pytest.approx(np.log2(10), abs=1e-6)  # table: 3.32
    l1, l2 = pairwise_distances(labels)
    # Expected for U[0,1]^10 differences: L1 = 10/3, L2 ~ sqrt(10/6) (table 3.41 / 1.3, another draw).
    assert l1 == pytest.approx(3.41, abs=0.35) and l2 == pytest.approx(1.3, abs=0.15)


def test_normal_dim_means_and_sd():
    labels = make_labels("normal_dim=4000", 10, 0)
    assert labels.dtype == np.float64
    np.testing.assert_allclose(labels.mean(axis=1), np.arange(10), atol=0.01)  # se 0.1/sqrt(4000)
    np.testing.assert_allclose(labels.std(axis=1), 0.1, atol=0.005)


@pytest.mark.parametrize("dim, entropy", [(5, 2.32), (50, 5.64)])
def test_entropy_of_all_distinct_vectors_is_log2_dim(dim, entropy):
    labels = make_labels(f"normal_dim={dim}", 10, 0)
    assert label_entropy(labels) == pytest.approx(entropy, abs=5e-3)


@pytest.mark.parametrize("gap", [10, 1, 0.1, 0])
def test_uniform_gap_ranges(gap):
    labels = make_labels(f"uniform_gap={gap}", 10, 0)
    for i in range(10):
        assert labels[i].min() >= np.float32(i * gap) and labels[i].max() <= np.float32(9 + i * gap)
        assert labels[i].max() - labels[i].min() > 7  # spans most of its width-9 range


def test_entropy_rounds_to_1e6_and_pairwise_needs_classes():
    assert label_entropy(np.array([[1.0, 1.0 + 1e-8, 2.0, 2.0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        pairwise_distances(np.zeros((1, 4)))


def test_file_labels(tmp_path):
    good = np.random.default_rng(0).normal(size=(10, 50)).astype(np.float32)
    np.save(tmp_path / "glove.npy", good)
    np.testing.assert_array_equal(make_labels(f"file={tmp_path / 'glove.npy'}", 10, 0), good)
    np.testing.assert_array_equal(make_labels("file", 10, 0, path=tmp_path / "glove.npy"), good)
    np.save(tmp_path / "bad.npy", good[:9])
    with pytest.raises(LabelError, match=r"bad\.npy.*shape \(9, 50\), expected \(10, \.\.\.\)"):
        make_labels(f"file={tmp_path / 'bad.npy'}", 10, 0)
    bad = good.copy()
    bad[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(LabelError, match=r"nan\.npy.*finite"):
        make_labels(f"file={tmp_path / 'nan.npy'}", 10, 0)
    with pytest.raises(LabelError, match=r"missing\.npy: not found"):
        make_labels(f"file={tmp_path / 'missing.npy'}", 10, 0)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(LabelError, match=r"junk\.npy: not a readable"):
        make_labels(f"file={tmp_path / 'junk.npy'}", 10, 0)


def test_permute_columns_never_identity():
    base = np.tile(np.arange(2, dtype=np.float32), (200, 3, 1))  # 2 columns: identity drawn half the time
    out = permute_columns(base, np.random.RandomState(8))
    assert (out[:, :, 0] == 1).all()


def test_mel_filterbank_shape_and_area_norm():
    fb = mel_filterbank()
    assert fb.shape == (64, 1025) and (fb >= 0).all()
    assert (fb.sum(axis=1) > 0).all()  # no empty band at 64 mels, fmax 8000
    assert np.flatnonzero(fb.sum(axis=0))[-1] * 22050 / 2048 <= 8000 + 22050 / 2048


def test_stats_table_and_figure(tmp_path):
    labels = {k: make_labels(k, 10, 0) for k in ("category", "uniform", "lowdim", "normal_dim=5")}
    table = label_stats_table(labels)
    assert list(table["label"]) == list(labels)
    assert list(table.columns) == ["label", "shape", "min", "max", "mean", "std", "entropy", "L1", "L2"]
    assert table.set_index("label").loc["uniform", "L1"] == pytest.approx(26.07, abs=5e-3)
    paths = plot_label_images(labels, tmp_path / "labels")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].read_bytes()[:5] == b"%PDF-"


def test_speech_needs_names_and_espeak(monkeypatch):
    with pytest.raises(LabelError, match="class_names"):
        make_labels("speech", 10, 0)
    monkeypatch.setattr("advpipe.labels.speech.shutil.which", lambda name: None)
    with pytest.raises(LabelError, match="apt-get install espeak-ng"):
        make_labels("speech", 10, 0, CIFAR10_SPEECH_NAMES)


@needs_espeak
def test_speech_and_shuffle_labels():
    speech = make_labels("speech", 10, 0, CIFAR10_SPEECH_NAMES)
    assert speech.shape == (10, 64, 64) and speech.dtype == np.float32
    assert speech.min() >= -80.0 and speech.max() <= 0.0
    assert speech.min() == pytest.approx(-80.0)  # the top_db floor is reached
    np.testing.assert_array_equal(speech, make_labels("speech", 10, 5, CIFAR10_SPEECH_NAMES))
    shuffled = make_labels("shuffle", 10, 0, CIFAR10_SPEECH_NAMES)
    for k in range(10):
        # Same columns, in another order (a permutation of the 64 time columns, never the identity).
        cols = {c.tobytes(): i for i, c in enumerate(speech[k].T)}
        perm = [cols[c.tobytes()] for c in shuffled[k].T]
        assert sorted(perm) == list(range(64)) or len(cols) < 64
        assert not np.array_equal(shuffled[k], speech[k])
    # SPEC's numpy seed 8 by default (seed-independent); permutation_seed=None follows the run seed.
    np.testing.assert_array_equal(shuffled, make_labels("shuffle", 10, 1, CIFAR10_SPEECH_NAMES))
    assert not np.array_equal(make_labels("shuffle", 10, 1, CIFAR10_SPEECH_NAMES, permutation_seed=None),
                              make_labels("shuffle", 10, 2, CIFAR10_SPEECH_NAMES, permutation_seed=None))


# SPEC 3, speech row: the TTS speaks "Airplane", "Car", ... (the original's names), not the dataset's classes.
SPEC3_SPOKEN = ["Airplane", "Car", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse", "Ship", "Truck"]
TORCHVISION_CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def spoken(monkeypatch):
    """Record the words handed to the synthesizer (no espeak-ng needed); each gets a short noise burst."""
    words = []

    def fake_synthesize(text, voice=None):
        words.append(text)
        return np.random.default_rng(len(words)).uniform(-0.5, 0.5, 11025), 22050

    monkeypatch.setattr("advpipe.labels.speech.synthesize", fake_synthesize)
    return words


@pytest.mark.parametrize("kind", ["speech", "shuffle"])
def test_cifar10_speech_speaks_spec3_names(spoken, kind):
    labels = make_labels(kind, 10, 0, TORCHVISION_CIFAR10)
    assert spoken == SPEC3_SPOKEN
    assert labels.shape == (10, 64, 64)
    assert CIFAR10_SPEECH_NAMES == SPEC3_SPOKEN


def test_speech_names_of_other_datasets_are_kept(spoken):
    names = ["0 - zero", "1 - one", "2 - two"]
    make_labels("speech", 3, 0, names)
    assert spoken == names
    spoken.clear()
    make_labels("speech", 10, 0, SPEC3_SPOKEN)  # already SPEC 3's names: spoken as given
    assert spoken == SPEC3_SPOKEN


def test_speech_audio_dir_reads_spoken_name_then_class_name(tmp_path, monkeypatch):
    from scipy.io import wavfile

    monkeypatch.setattr("advpipe.labels.speech.synthesize", lambda *a, **k: pytest.fail("no TTS with audio_dir"))
    for i, name in enumerate(SPEC3_SPOKEN[:-1] + ["truck"]):  # Car.wav by SPEC 3's name, truck.wav by class
        wave = np.random.default_rng(i).uniform(-0.5, 0.5, 11025)
        wavfile.write(tmp_path / f"{name}.wav", 22050, (wave * 32767).astype(np.int16))
    assert make_labels("speech", 10, 0, TORCHVISION_CIFAR10, audio_dir=tmp_path).shape == (10, 64, 64)
    (tmp_path / "Car.wav").unlink()
    with pytest.raises(LabelError, match="Car.wav or .*automobile.wav"):
        make_labels("speech", 10, 0, TORCHVISION_CIFAR10, audio_dir=tmp_path)
