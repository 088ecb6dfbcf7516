"""LESCI (SPEC 4 (b)): the defense against independent references (scikit-learn's PCA, TruncatedSVD and
NearestNeighbors, a majority vote written here) and its invariants in t and k."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.neighbors import NearestNeighbors

from advpipe.data import load_split
from advpipe.defenses import LESCI, fit_pca, topk_cosine, vote
from advpipe.metrics.lesci import lesci_metrics
from advpipe.models.layers import activations, find_layer, layer_names

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(digits_model):
    """The digits CNN, the embedding of its correctly classified training images at the penultimate layer
    (r = 8, centred), and the test images."""
    model, x_test, y_test, _ = digits_model
    train = load_split({"source": "digits", "test_fraction": 0.3}, "train", "unused", 0)
    with torch.no_grad():
        logits, a = activations(model, "penultimate", train.x)
    keep = logits.argmax(1) == train.y
    a, labels = a[keep], train.y[keep]
    w, mu = fit_pca(a, 8, center=True)
    return model, w, mu, (a - mu) @ w, labels, x_test, y_test


def lesci(built, **kw) -> LESCI:
    model, w, mu, e, labels, *_ = built
    return LESCI(model, "penultimate", w, mu, e, labels, 10, **kw)


def reference_knn(built, k: int) -> np.ndarray:
    """kNN labels from scikit-learn's cosine NearestNeighbors on the PCA codes, majority vote written here."""
    model, w, mu, e, labels, x, _ = built
    with torch.no_grad():
        codes = (activations(model, "penultimate", x)[1] - mu) @ w
    _, idx = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(e.numpy()).kneighbors(codes.numpy())
    votes = labels.numpy()[idx]
    return np.array([np.bincount(v, minlength=10).argmax() for v in votes])  # argmax: the lowest class on ties


@pytest.mark.parametrize("center", [True, False])
def test_pca_matches_scikit_learn_up_to_sign(center):
    a = torch.from_numpy(np.random.default_rng(0).normal(2.0, 1.0, (300, 40)).astype(np.float32))
    w, mu = fit_pca(a, 6, center=center)
    ref = (PCA(6).fit(a.numpy()) if center else TruncatedSVD(6, algorithm="arpack").fit(a.numpy())).components_
    assert np.allclose(np.abs(w.numpy().T), np.abs(ref), atol=1e-4)
    assert np.allclose(mu.numpy(), a.numpy().mean(0) if center else 0, atol=1e-5)


def test_t_zero_projects_everything_and_equals_knn_on_pca(built):
    *_, x, y = built
    with torch.no_grad():
        out, d = lesci(built, k=10, t=0.0).forward_with_decision(x)
    assert bool(d.projected.all())
    knn = reference_knn(built, 10)
    assert np.array_equal(d.label.numpy(), knn)
    assert np.array_equal(out.argmax(1).numpy(), knn)  # the one-hot of the kNN label is the output


def test_t_above_one_keeps_the_base_model(built):
    model, *_, x, _ = built
    with torch.no_grad():
        out, d = lesci(built, k=10, t=1.01).forward_with_decision(x)
        assert not bool(d.projected.any())
        assert torch.equal(out, model(x))


def test_identity_fraction_does_not_decrease_with_t(built):
    *_, x, y = built
    fractions = []
    for t in np.linspace(0, 1, 11):
        with torch.no_grad():
            _, d = lesci(built, k=10, t=float(t)).forward_with_decision(x)
        fractions.append(1 - d.projected.float().mean().item())
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] < 1.0


def test_k1_on_an_embedding_row_gives_its_label_and_ties_go_to_the_lowest_class():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sims, rows = topk_cosine(torch.tensor([[0.0, 2.0], [1.0, 1.0]]), e, 1)
    assert rows[:, 0].tolist() == [1, 2]
    labels = torch.tensor([[3, 1], [5, 2], [4, 4]])
    best, frac = vote(labels, 6)
    assert best.tolist() == [1, 2, 4] and frac.tolist() == [0.5, 0.5, 1.0]
    # equal similarities keep the lower row: [1, 0] and [2, 0] are the same direction
    _, rows = topk_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]), 2, block=1)
    assert rows.tolist() == [[1, 2]]


def test_vq_output_continues_the_network_from_an_embedding_row(built):
    """Full rank, centred: a row of E maps back to its training activation exactly, so a training image's own
    LESCI output under vq is the base network's logits for it."""
    model, *_ = built
    train = load_split({"source": "digits", "test_fraction": 0.3}, "train", "unused", 0)
    x = train.x[:200]
    with torch.no_grad():
        logits, a = activations(model, "penultimate", x)
        w, mu = fit_pca(a, a.shape[1], center=True)
        net = LESCI(model, "penultimate", w, mu, (a - mu) @ w, logits.argmax(1), 10, k=1, t=0.0, output="vq")
        out, d = net.forward_with_decision(x)
    assert bool(d.projected.all()) and d.row.tolist() == list(range(200))
    assert torch.allclose(out, logits, atol=1e-4)


def test_metrics_use_the_originals_denominators():
    m = lesci_metrics(label=[0, 1, 2, 3], pred=[0, 1, 0, 0], knn_label=[0, 0, 2, 3], projected=[True, False, True, False])
    assert m["accuracy"] == 0.5
    assert m["accuracy_identity"] == pytest.approx(1 / 2.001)  # sample 1 right, sample 3 wrong
    assert m["accuracy_projection"] == pytest.approx(2 / 2.001)
    assert m["percentage_identity_mapped"] == 0.5


def test_layers_are_named(built):
    model, *_ = built
    assert {"penultimate", "conv1", "conv2", "pool", "body.0"} <= set(layer_names(model))
    with pytest.raises(KeyError, match="expected one of"):
        find_layer(model, "act5_block3")
