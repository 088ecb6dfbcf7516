"""vrapi's scatter figures (SPEC 1, visualize.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from advpipe.plots import (DARK, LIGHT, data_limits, plot_by_class, plot_clean, plot_projection_figures,
                           scatter_clean)
from advpipe.plots.scatter import safe_name

NAMES = ["airplane", "automobile", "bird"]


@pytest.fixture(scope="module")
def points() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    z = (rng.normal(size=(60, 2)) + 3 * labels[:, None]).astype(np.float32)
    adv = (z + rng.normal(size=(60, 2))).astype(np.float32)
    return z, labels, adv


def assert_valid(path: Path) -> None:
    head = path.read_bytes()[:8]
    assert head.startswith(b"%PDF-") if path.suffix == ".pdf" else head == b"\x89PNG\r\n\x1a\n", path


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_exact_mode_is_one_collection_in_index_order(points) -> None:
    z, labels, _ = points
    ax = Figure().add_subplot()
    clean = scatter_clean(ax, z, labels, DARK, approximate=False)
    colls = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(colls) == 1 and clean.collections == colls
    # offsets in dataset order = vrapi's zorder index/N: later points drawn over earlier ones
    np.testing.assert_array_equal(colls[0].get_offsets(), z)
    np.testing.assert_allclose(colls[0].get_facecolors()[:, :3], DARK[labels])
    clean.recolour(LIGHT)
    np.testing.assert_allclose(colls[0].get_facecolors()[:, :3], LIGHT[labels])


def _render(draw) -> np.ndarray:
    fig = Figure(figsize=(4, 4), dpi=50)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(-2, 3)
    ax.set_ylim(-2, 3)
    ax.axis("off")
    draw(ax)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_exact_mode_stacks_like_vrapi_zorder_per_point() -> None:
    # vrapi: one scatter per point, zorder index/N, looping over classes. Dashed edges send both ways
    # through Agg's draw_path_collection (one-colour collections are otherwise snapped to whole pixels
    # by draw_markers), so any difference left would be the stacking order.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 200)
    z = rng.normal(size=(200, 2)) * 0.6 + 0.05 * labels[:, None]

    def vrapi(ax) -> None:
        for c in range(10):
            for i in np.flatnonzero(labels == c):
                ax.scatter(z[i, 0], z[i, 1], c=[DARK[c]], zorder=i / len(z), linestyle="--")

    def ours(order: np.ndarray):
        def draw(ax) -> None:
            scatter_clean(ax, z[order], labels[order], DARK).collections[0].set_linestyle("--")
        return draw

    reference = _render(vrapi)
    np.testing.assert_array_equal(_render(ours(np.arange(200))), reference)
    assert (_render(ours(rng.permutation(200))) != reference).any()  # the order is what makes them equal


def test_later_index_on_top_whatever_the_class() -> None:
    z = np.zeros((2, 2))  # two points at one place: only the one drawn last shows its pure colour
    for labels in ([1, 0], [0, 1]):
        img = _render(lambda ax: scatter_clean(ax, z, np.array(labels), DARK))[..., :3].reshape(-1, 3)
        pure = {c: (img == np.round(DARK[c] * 255)).all(axis=1).any() for c in labels}
        assert pure == {labels[1]: True, labels[0]: False}


def test_approximate_mode_is_one_collection_per_class(points) -> None:
    z, labels, _ = points
    ax = Figure().add_subplot()
    clean = scatter_clean(ax, z, labels, DARK, approximate=True)
    assert len(ax.collections) == 3 and clean.classes == [0, 1, 2]
    for c, coll in enumerate(ax.collections):
        np.testing.assert_array_equal(coll.get_offsets(), z[labels == c])
        np.testing.assert_allclose(coll.get_facecolors()[0, :3], DARK[c])


def test_palettes_are_tab20_pairs() -> None:
    import matplotlib
    tab20 = np.asarray(matplotlib.colormaps["tab20"].colors)
    np.testing.assert_array_equal(DARK, tab20[0::2])
    np.testing.assert_array_equal(LIGHT, tab20[1::2])


def test_data_limits_match_matplotlib_autoscale(points) -> None:
    z, _, adv = points
    ax = Figure().add_subplot()
    ax.scatter(*np.concatenate([z, adv]).T)
    (x0, x1), (y0, y1) = data_limits(z, adv)
    np.testing.assert_allclose([x0, x1], ax.get_xlim(), rtol=1e-6)
    np.testing.assert_allclose([y0, y1], ax.get_ylim(), rtol=1e-6)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("legend", [False, True])
def test_plot_clean_writes_pdf_and_png(tmp_path: Path, points, approximate: bool, legend: bool) -> None:
    z, labels, _ = points
    paths = plot_clean(z, labels, NAMES, tmp_path / "non_adversarial", legend, approximate, dpi=20)
    assert paths == [tmp_path / "non_adversarial.pdf", tmp_path / "non_adversarial.png"]
    for p in paths:
        assert_valid(p)
    assert no_temporaries(tmp_path)


def test_plot_by_class_writes(tmp_path: Path, points) -> None:
    z, labels, adv = points
    paths = plot_by_class(z, labels, adv, labels, NAMES, 1, tmp_path / "by_1", legend=True, dpi=20)
    assert [p.name for p in paths] == ["by_1.pdf", "by_1.png"]
    for p in paths:
        assert_valid(p)


def test_projection_figure_set(tmp_path: Path, points) -> None:
    z, labels, adv = points
    paths = plot_projection_figures(z, labels, adv, labels, NAMES, tmp_path, approximate=False, dpi=20)
    sub = "non_adversarial_and_adversarial_by_class"
    stems = ["non_adversarial", "non_adversarial_with_legend"]
    for c, name in enumerate(NAMES):
        stems += [f"{sub}/{sub}_{c}_{name}", f"{sub}/{sub}_with_legend_{c}_{name}"]
    assert paths == [tmp_path / f"{s}.{ext}" for s in stems for ext in ("pdf", "png")]
    for p in paths:
        assert_valid(p)
    assert sorted(paths) == sorted(p for p in tmp_path.rglob("*") if p.is_file())


def test_pdf_is_reproducible(tmp_path: Path, points) -> None:
    z, labels, _ = points
    a = plot_clean(z, labels, NAMES, tmp_path / "a", True, formats=("pdf",))[0]
    b = plot_clean(z, labels, NAMES, tmp_path / "b", True, formats=("pdf",))[0]
    assert a.read_bytes() == b.read_bytes()


def test_safe_name() -> None:
    assert safe_name("T-shirt/top") == "T-shirt_top"
    assert safe_name("airplane") == "airplane"
