"""Projection backends (issue 17): vrapi.projection_options.<projection>.backend picks the library that fits a
projection; sklearn stays tsne's default, openTSNE (FFT gradients) and RAPIDS cuML (GPU) are options."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from sklearn.manifold import TSNE
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from advpipe.config import ConfigError, validate
from advpipe.projections import BACKENDS, backend, estimator_options, gpu_request, project
from advpipe.projections.backends import OPENTSNE_VRAPI, cuml_installed
from advpipe.projections.project import _estimator, accepted_options
from wf import ROOT, TINY, snakemake

pytestmark = pytest.mark.usefixtures("one_thread")

# openTSNE's FFT grid costs the same per iteration whatever N: the tests shorten the schedule, not the mapping.
SHORT = {"early_exaggeration_iter": 30, "n_iter": 30}


from test_projections import data  # noqa: E402,F401  (the same 4-blob clean and adversarial points)


def test_backend_table_and_schema():
    assert BACKENDS == {"pca": ("sklearn",), "umap": ("umap-learn", "cuml"), "tsne": ("sklearn", "opentsne", "cuml"),
                        "parametric_umap": ("advpipe",)}
    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    words = schema["properties"]["vrapi"]["properties"]["projection_options"]["additionalProperties"]
    described = words["properties"]["backend"]["description"]
    assert all(b in described for names in BACKENDS.values() for b in names)
    assert "default" not in words["properties"]["backend"]  # no default filled in: existing params stay as they were


def test_default_backend_is_vrapis_sklearn_tsne(data):
    clean, adv = data
    default = project("tsne", clean, adv, seed=3)
    explicit = project("tsne", clean, adv, seed=3, options={"tsne": {"backend": "sklearn"}})
    z = TSNE(n_components=2, random_state=3, init="random", learning_rate=200.0).fit_transform(
        np.concatenate([clean, adv]))
    for a, b in zip(default, explicit):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate(default), z.astype(np.float32))
    assert backend("tsne", None) == "sklearn" and backend("umap_oos", {}) == "umap-learn"


def test_opentsne_takes_vrapis_settings():
    model = _estimator("tsne", "opentsne")(7, perplexity=10.0)
    got = {k: getattr(model, k) for k in OPENTSNE_VRAPI}
    assert got == {**OPENTSNE_VRAPI, "perplexity": 10.0}  # a user's option overrides the mapped default
    assert model.random_state == 7 and model.n_jobs == 1
    # sklearn 0.24.2's schedule: 250 exaggerated iterations at momentum 0.5 of 1000; its rate 200 times the factor 4
    # sklearn puts in its gradient; exact kNN; FFT for the negative forces
    assert (model.early_exaggeration, model.early_exaggeration_iter, model.early_exaggeration_iter + model.n_iter,
            model.initial_momentum, model.final_momentum) == (12.0, 250, 1000, 0.5, 0.8)
    assert (model.learning_rate, model.initialization, model.neighbors, model.negative_gradient_method) == (
        800.0, "random", "exact", "fft")


def test_opentsne_same_seed_same_bytes_and_seed_matters(data):
    clean, adv = data
    opts = {"tsne": {"backend": "opentsne", **SHORT}}
    first = project("tsne", clean, adv, seed=3, options=opts)
    again = project("tsne", clean, adv, seed=3, options=opts)
    other = project("tsne", clean, adv, seed=4, options=opts)
    for a, b in zip(first, again):
        assert a.dtype == np.float32 and a.shape[1] == 2 and np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    # not sklearn's embedding under another name
    assert not np.allclose(np.concatenate(first), np.concatenate(project("tsne", clean, adv, seed=3)), atol=1e-2)


def test_both_backends_keep_the_digit_clusters():
    """5-NN accuracy (5-fold) in the 2-D embedding of 800 of sklearn's digits, fit as 400 "clean" + 400 "adversarial"
    points: both backends keep the classes apart, about equally well. Shortened schedules (sklearn 250 + 150
    iterations, openTSNE 100 + 100; the full ones give 0.95 on both, bench/out/tsne_backends.md has the scale)."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:800].astype(np.float32), y[:800]
    accuracy = {}
    for name, opts in {"sklearn": {"max_iter": 400},
                       "opentsne": {"backend": "opentsne", "early_exaggeration_iter": 100, "n_iter": 100}}.items():
        clean_z, adv_z = project("tsne", x[:400], x[400:], seed=0, options={"tsne": opts})
        z = np.concatenate([clean_z, adv_z])
        accuracy[name] = cross_val_score(KNeighborsClassifier(5), z, y, cv=5).mean()
    assert accuracy["sklearn"] >= 0.9 and accuracy["opentsne"] >= 0.9, accuracy
    assert abs(accuracy["sklearn"] - accuracy["opentsne"]) <= 0.03, accuracy


def test_accepted_options_follow_the_backend():
    sk, ot, cu = (accepted_options("tsne", b) for b in BACKENDS["tsne"])
    assert {"init", "max_iter", "angle"} <= sk and not {"initialization", "n_iter"} & sk
    assert {"initialization", "n_iter", "negative_gradient_method", "neighbors"} <= ot and "init" not in ot
    assert {"init", "max_iter", "learning_rate_method", "exaggeration_iter"} <= cu and "n_jobs" not in cu
    assert all("backend" in s and "random_state" not in s for s in (sk, ot, cu))
    assert accepted_options("tsne") == sk and "n_jobs" in accepted_options("umap_oos")
    assert "n_jobs" not in accepted_options("umap_oos", "cuml") and "hash_input" in accepted_options("umap", "cuml")


def config(options):
    return {
        "datasets": {"digits": {"source": "digits"}},
        "models": {"cnn": {"dataset": "digits", "arch": "small_cnn"}},
        "attacks": {"fgsm": {"method": "fgsm"}},
        "vrapi": {"models": ["cnn"], "attacks": ["fgsm"], "trials": 2, "projection_options": options},
    }


GOOD = [
    {"tsne": {"backend": "opentsne", "negative_gradient_method": "bh", "n_iter": 500}},
    {"tsne": {"backend": "cuml", "max_iter": 500, "learning_rate_method": "adaptive"}},  # no cuML needed to check
    {"tsne": {"backend": "sklearn", "init": "pca"}},
    {"umap": {"backend": "cuml", "n_neighbors": 10}, "umap_oos": {"backend": "umap-learn", "n_jobs": 1}},
    {"pca": {"backend": "sklearn"}},
]


@pytest.mark.parametrize("options", GOOD)
def test_valid_backend_options_load(options):
    assert validate(config(options))["vrapi"]["projection_options"] == options


BAD = [
    # (options, the key path named, a word of the message)
    ({"tsne": {"backend": "opentnse"}}, "vrapi.projection_options.tsne.backend", "['cuml', 'opentsne', 'sklearn']"),
    ({"umap_oos": {"backend": "opentsne"}}, "vrapi.projection_options.umap_oos.backend", "'umap-learn'"),
    ({"pca": {"backend": "cuml"}}, "vrapi.projection_options.pca.backend", "backend of pca"),
    ({"tsne": {"backend": 3}}, "vrapi.projection_options.tsne.backend", "expected text"),  # the schema's type
    # sklearn's name of an option, on openTSNE (which calls it `initialization`)
    ({"tsne": {"backend": "opentsne", "init": "pca"}}, "vrapi.projection_options.tsne.init", "'initialization'"),
    ({"tsne": {"backend": "cuml", "n_iter": 500}}, "vrapi.projection_options.tsne.n_iter", "backend cuml"),
    ({"tsne": {"negative_gradient_method": "fft"}}, "vrapi.projection_options.tsne.negative_gradient_method",
     "backend sklearn"),
    # umap's options reach umap_oos too, here on cuML, which has no n_jobs
    ({"umap": {"n_jobs": 1}, "umap_oos": {"backend": "cuml"}}, "vrapi.projection_options.umap.n_jobs",
     "option of umap_oos (backend cuml)"),
]


@pytest.mark.parametrize("options,key,words", BAD, ids=[b[1].split(".", 2)[2] + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_backend_or_option_names_the_key(options, key, words):
    with pytest.raises(ConfigError) as info:
        validate(config(options))
    assert f"'{key}'" in str(info.value) and words in str(info.value), str(info.value)


def test_options_carry_the_backend_into_params():
    opts = {"umap": {"backend": "cuml", "min_dist": 0.2}, "tsne": {"backend": "opentsne"}}
    assert estimator_options("umap_oos", opts) == {"backend": "cuml", "min_dist": 0.2}
    assert estimator_options("tsne", opts) == {"backend": "opentsne"}
    assert estimator_options("tsne", {}) == {}  # the default adds nothing: existing jobs keep their params


def test_gpu_request_only_for_cuml():
    gpu = gpu_request({"tsne": {"backend": "cuml"}, "umap": {"backend": "cuml"}, "umap_oos": {"backend": "umap-learn"}})
    asked = {p: gpu(SimpleNamespace(projection=p)) for p in ("pca", "umap", "tsne", "umap_oos", "pca_oos")}
    assert asked == {"pca": 0, "umap": 1, "tsne": 1, "umap_oos": 0, "pca_oos": 0}
    assert gpu_request({"tsne": {"backend": "opentsne"}})(SimpleNamespace(projection="tsne")) == 0
    assert gpu_request(None)(SimpleNamespace(projection="umap_oos")) == 0


@pytest.mark.skipif(cuml_installed(), reason="cuML is installed here")
@pytest.mark.parametrize("name,options,key", [
    ("tsne", {"tsne": {"backend": "cuml"}}, "'vrapi.projection_options.tsne.backend'"),
    ("umap_oos", {"umap": {"backend": "cuml"}}, "'vrapi.projection_options.umap_oos.backend' (or 'umap.backend'"),
])
def test_cuml_without_cuml_fails_naming_the_key(data, name, options, key):
    clean, adv = data
    with pytest.raises(ConfigError) as info:
        project(name, clean, adv, seed=0, options=options)
    message = str(info.value)
    assert message.startswith(f"config key {key}") and "needs RAPIDS cuML" in message
    assert "pypi.nvidia.com" in message and "another backend" in message


def test_dry_run_asks_a_gpu_for_the_cuml_projections(tmp_path):
    """The config selects cuml for tsne and umap (so umap_oos too): exactly those project jobs ask for a GPU."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["vrapi"]["projection_options"]["tsne"] = {"backend": "cuml", "perplexity": 10}
    cfg["vrapi"]["projection_options"]["umap"] = {"backend": "cuml"}
    path = tmp_path / "cuml.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--dry-run", configfile=path).stdout
    asked = {}
    for block in re.split(r"\n(?=rule )", out):
        rule = re.match(r"rule (\w+):", block)
        if not rule or rule.group(1) not in ("project", "project_oos"):
            continue
        projection = re.search(r"wildcards: .*projection=(\w+)", block).group(1)
        asked.setdefault(projection, set()).add(int(re.search(r"resources: .*\bgpu=(\d+)", block).group(1)))
    assert asked == {"pca": {0}, "umap": {1}, "tsne": {1}, "parametric_umap": {0}, "pca_oos": {0}, "umap_oos": {1},
                     "parametric_umap_oos": {0}}
