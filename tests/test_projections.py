"""The seven projections (SPEC 1, projection.py) and the torch parametric UMAP."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.manifold import trustworthiness
from sklearn.neighbors import KNeighborsClassifier

from advpipe.projections import PROJECTIONS, ParametricUMAP, estimator_options, project
from advpipe.projections.parametric_umap import umap_cross_entropy

OPTIONS = {"parametric_umap": {"epochs": 10, "progress": False}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 4
    clean = (centres[rng.integers(0, 4, 90)] + rng.normal(size=(90, 16))).astype(np.float32)
    adv = (clean[:60] + 0.3 * rng.normal(size=(60, 16))).astype(np.float32)
    return clean, adv


@pytest.fixture(scope="module")
def runs(data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    clean, adv = data
    return {name: project(name, clean, adv, seed=3, options=OPTIONS) for name in PROJECTIONS}


def test_names() -> None:
    assert PROJECTIONS == ("pca", "umap", "tsne", "parametric_umap", "pca_oos", "umap_oos", "parametric_umap_oos")


@pytest.mark.parametrize("name", PROJECTIONS)
def test_shapes_dtype_finite(runs, name: str) -> None:
    clean_z, adv_z = runs[name]
    assert clean_z.shape == (90, 2) and adv_z.shape == (60, 2)
    assert clean_z.dtype == np.float32 and adv_z.dtype == np.float32
    assert np.isfinite(clean_z).all() and np.isfinite(adv_z).all()


@pytest.mark.parametrize("name", PROJECTIONS)
def test_same_seed_bit_identical(data, runs, name: str) -> None:
    clean, adv = data
    again = project(name, clean, adv, seed=3, options=OPTIONS)
    for a, b in zip(runs[name], again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["umap", "tsne", "parametric_umap"])
def test_seed_matters(data, runs, name: str) -> None:
    clean, adv = data
    other = project(name, clean, adv, seed=4, options=OPTIONS)
    assert not np.array_equal(runs[name][0], other[0])


def svd_pca(fit: np.ndarray, *parts: np.ndarray) -> list[np.ndarray]:
    """PCA to 2-D from its definition, in float64 with numpy: centre on the mean of `fit`, take the top two right
    singular vectors of the centred data, project each part. Signs are fixed so that the largest-|.| entry of each
    component is positive (the comparison below aligns signs per component anyway)."""
    fit = fit.astype(np.float64)
    mean = fit.mean(0)
    _, sv, vt = np.linalg.svd(fit - mean, full_matrices=False)
    assert sv[1] > 1.01 * sv[2]  # the 2-D subspace is well defined (no near-tie with the third component)
    comps = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]
    return [(p.astype(np.float64) - mean) @ comps.T for p in parts]


def assert_same_up_to_sign(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Each 2-D component equal up to one sign flip shared by all parts (PCA's only freedom here), to float32
    rounding."""
    whole_got, whole_exp = np.concatenate(got), np.concatenate(expected)
    signs = np.sign((whole_got * whole_exp).sum(0))
    assert (signs != 0).all()
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g * signs, e, rtol=0, atol=1e-4 * np.abs(whole_exp).max())


def test_pca_oos_is_fit_on_clean(data, runs) -> None:
    clean, adv = data
    assert_same_up_to_sign(list(runs["pca_oos"]), svd_pca(clean, clean, adv))
    # fit on clean only: the clean projection is centred, the adversarial one is not (its rows are a subset)
    assert np.abs(runs["pca_oos"][0].mean(0)).max() < 1e-4 * np.abs(runs["pca_oos"][0]).max()
    joint = svd_pca(np.concatenate([clean, adv]), clean, adv)
    assert not np.allclose(np.abs(runs["pca_oos"][1]), np.abs(joint[1]), atol=1e-2)


def test_pca_is_fit_jointly(data, runs) -> None:
    clean, adv = data
    assert_same_up_to_sign(list(runs["pca"]), svd_pca(np.concatenate([clean, adv]), clean, adv))
    # the joint projection is centred over [clean; adv], and keeps the most variance a 2-D linear map can
    both = np.concatenate(runs["pca"]).astype(np.float64)
    assert np.abs(both.mean(0)).max() < 1e-4 * np.abs(both).max()
    centred = np.concatenate([clean, adv]).astype(np.float64)
    centred -= centred.mean(0)
    top2 = np.linalg.svd(centred, compute_uv=False)[:2]
    np.testing.assert_allclose(np.sort(np.linalg.norm(both, axis=0))[::-1], top2, rtol=1e-5)


def test_umap_oos_clean_part_is_the_fitted_embedding(data, runs) -> None:
    from umap import UMAP
    clean, _ = data
    emb = UMAP(n_components=2, random_state=3, n_jobs=1).fit(clean).embedding_
    np.testing.assert_array_equal(runs["umap_oos"][0], emb.astype(np.float32))


def test_parametric_oos_is_fit_on_clean(data, runs) -> None:
    clean, adv = data
    model = ParametricUMAP(random_state=3, epochs=10, progress=False).fit(clean)
    np.testing.assert_array_equal(runs["parametric_umap_oos"][0], model.transform(clean))
    np.testing.assert_array_equal(runs["parametric_umap_oos"][1], model.transform(adv))


def test_unknown_names_rejected(data) -> None:
    clean, adv = data
    with pytest.raises(ValueError, match="known: pca, umap, tsne"):
        project("isomap", clean, adv, seed=0)
    with pytest.raises(ValueError, match="unknown projection 'umapp'"):
        project("umap", clean, adv, seed=0, options={"umapp": {}})
    with pytest.raises(ValueError, match="same D"):
        project("pca", clean, adv[:, :3], seed=0)


def test_options_base_then_variant() -> None:
    opts = {"umap": {"n_neighbors": 5, "min_dist": 0.2}, "umap_oos": {"n_neighbors": 7}}
    assert estimator_options("umap", opts) == {"n_neighbors": 5, "min_dist": 0.2}
    assert estimator_options("umap_oos", opts) == {"n_neighbors": 7, "min_dist": 0.2}
    assert estimator_options("pca", opts) == {}


def test_options_reach_the_estimator(data) -> None:
    clean, adv = data
    with pytest.raises(TypeError):  # an estimator keyword that does not exist fails loudly
        project("pca", clean, adv, seed=0, options={"pca": {"no_such_option": 1}})


def test_umap_cross_entropy_values() -> None:
    a, b = 1.577, 0.895
    d = torch.tensor([0.5, 1.0, 3.0])
    q = 1 / (1 + a * d ** (2 * b))
    pos = umap_cross_entropy(d ** 2, torch.ones(3, dtype=torch.bool), a, b)
    neg = umap_cross_entropy(d ** 2, torch.zeros(3, dtype=torch.bool), a, b)
    assert pos.item() == pytest.approx(-torch.log(q).mean().item(), rel=1e-5)
    assert neg.item() == pytest.approx(-torch.log(1 - q).mean().item(), rel=1e-5)
    # clipped at -log(1e-4) when q -> 1 (d -> 0) for a negative pair
    at_zero = umap_cross_entropy(torch.zeros(1), torch.zeros(1, dtype=torch.bool), a, b)
    assert at_zero.item() == pytest.approx(-np.log(1e-4), rel=1e-5)


def test_parametric_umap_separates_blobs() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 64)) * 3
    labels = rng.integers(0, 6, 400)
    x = (centres[labels] + rng.normal(size=(400, 64))).astype(np.float32)
    model = ParametricUMAP(random_state=0, epochs=40, progress=False)
    z = model.fit_transform(x)
    knn = KNeighborsClassifier(n_neighbors=5).fit(z[:300], labels[:300])
    assert knn.score(z[300:], labels[300:]) >= 0.95
    assert trustworthiness(x, z, n_neighbors=10) >= 0.9
    # new points from the same blobs land among their own class
    new = (centres[labels[:50]] + rng.normal(size=(50, 64))).astype(np.float32)
    assert knn.score(model.transform(new), labels[:50]) >= 0.95


def test_parametric_umap_transform_before_fit() -> None:
    with pytest.raises(RuntimeError):
        ParametricUMAP().transform(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("name", ["pca_oos", "umap_oos", "parametric_umap_oos", "pca"])
def test_project_many_equals_one_at_a_time(data, name):
    """Out-of-sample variants fit once for all adversarial sets; the result is what separate jobs give."""
    from advpipe.projections import project_many

    x, _ = data
    clean, advs = x[:50], [x[50:70], x[70:90] + 0.1]
    many = project_many(name, clean, advs, seed=4, options=OPTIONS)
    for (cz, az), adv in zip(many, advs):
        c1, a1 = project(name, clean, adv, seed=4, options=OPTIONS)
        np.testing.assert_array_equal(cz, c1)
        np.testing.assert_array_equal(az, a1)
