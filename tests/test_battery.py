"""The foolbox battery (issue 14 items 7-8): foolbox-3 attacks as engine attacks, checked against foolbox called
directly and the engine's own FGSM; minimal-attack invariants; the battery table recomputed here from the dumps
the real attack stage wrote; the gradient-masking flags on the plain digits CNN (none) and on a LESCI one-hot
model (zero gradients, black-box beats white-box)."""
from __future__ import annotations

import foolbox as fb
import numpy as np
import pandas as pd
import pytest
import torch

from advpipe.attacks import FOOLBOX1_TO_3, build_attack
from advpipe.attacks.foolbox_attacks import GRADIENT_FREE, foolbox_class, spec4_attacks
from advpipe.data import load_split
from advpipe.io.h5 import read_attrs
from advpipe.models import save_trained
from advpipe.pipeline import attack as attack_stage
from advpipe.pipeline import battery

pytestmark = pytest.mark.usefixtures("one_thread")

PRED = {"kind": "misclassification", "on": "prediction"}
DIGITS = {"source": "digits", "test_fraction": 0.3}
GRID = [0.02, 0.05, 0.1, 0.2]


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).float().mean())


# --- foolbox attacks through the engine ---------------------------------------------------------------------------

def test_fgsm_agrees_with_foolbox_itself_and_the_engines_fgsm(digits_model):
    model, x, y, pred = digits_model
    x, y, pred = x[:120], y[:120], pred[:120]
    ours = build_attack({"method": "foolbox", "attack": "LinfFastGradientAttack", "eps": GRID})(model, x, y)
    _, clipped, direct = fb.attacks.LinfFastGradientAttack()(fb.PyTorchModel(model.eval(), bounds=(0, 1)), x,
                                                             fb.criteria.Misclassification(pred), epsilons=GRID)
    engine = build_attack({"method": "fgsm", "eps": GRID, "quantize": False, "criterion": PRED})(model, x, y)
    assert ours.success.shape == direct.shape == engine.success.shape == (len(GRID), len(x))
    rates = ours.success.float().mean(1)
    assert 0 < rates[0] < rates[-1] < 1 or 0 < rates[1] < 1  # a grid where success changes: a real comparison
    for k in range(len(GRID)):
        assert agreement(ours.success[k], direct[k]) >= 0.95
        assert agreement(ours.success[k], engine.success[k]) >= 0.95
    torch.testing.assert_close(ours.x_adv, torch.stack(clipped), atol=1e-6, rtol=0)
    assert (ours.norms["Linf"] <= torch.tensor(GRID)[:, None] + 1e-6).all()


@pytest.mark.parametrize("name, options", [("L2DeepFoolAttack", {}), ("SaltAndPepperNoiseAttack", {"steps": 200})])
def test_minimal_attack_invariants(digits_model, name, options):
    model, x, y, pred = digits_model
    x, y, pred = x[:40], y[:40], pred[:40]
    cfg = {"method": "foolbox", "attack": name, "options": options, "seed": 3}
    before = torch.get_rng_state()
    r = build_attack(cfg)(model, x, y)
    assert torch.equal(torch.get_rng_state(), before)  # foolbox's global draws were seeded and restored
    assert r.distance.shape == r.success.shape == (len(x),) and r.x_adv.shape == x.shape
    assert torch.equal(torch.isfinite(r.distance), r.success) and r.success.float().mean() > 0.5
    l2 = torch.linalg.vector_norm((r.x_adv - x).flatten(1), dim=1)
    torch.testing.assert_close(r.distance[r.success], l2[r.success])
    torch.testing.assert_close(r.norms["L2"][r.success], r.distance[r.success])
    assert (r.distance[r.success] > 0).all() and (r.x_adv >= 0).all() and (r.x_adv <= 1).all()
    with torch.no_grad():
        adv_pred = model(r.x_adv).argmax(1)
    assert torch.equal(adv_pred != pred, r.success)  # an adversarial exactly where the distance is finite
    again = build_attack(cfg)(model, x, y)
    assert torch.equal(again.x_adv, r.x_adv) and torch.equal(again.distance, r.distance)  # deterministic
    # an L2 grid only says where an outcome counts: success at eps <=> distance <= eps
    eps = [0.3, 0.6, 1.0, 2.0]
    g = build_attack({**cfg, "eps": eps})(model, x, y)
    assert g.success.shape == (len(eps), len(x))
    torch.testing.assert_close(g.distance, r.distance)
    assert torch.equal(g.success, r.distance[None, :] <= torch.tensor(eps)[:, None])


def test_a_random_fixed_budget_attack_answers_each_eps_alone(digits_model):
    """Additive noise draws from foolbox's global RNG: per eps a stream of its own, seeded, and the caller's left
    alone; the outcome at an eps does not depend on the rest of the grid."""
    model, x, y, _ = digits_model
    cfg = {"method": "foolbox", "attack": "L2AdditiveGaussianNoiseAttack", "seed": 7}
    before = torch.get_rng_state()
    grid = build_attack({**cfg, "eps": [0.5, 2.0, 4.0]})(model, x[:60], y[:60])
    one = build_attack({**cfg, "eps": 2.0})(model, x[:60], y[:60])
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(grid.x_adv[1], one.x_adv) and torch.equal(grid.success[1], one.success)
    assert (grid.norms["L2"] <= torch.tensor([0.5, 2.0, 4.0])[:, None] + 1e-4).all()  # noise of L2 eps, clipped
    assert (grid.norms["L2"] > 0).all()
    other = build_attack({**cfg, "eps": 2.0, "seed": 8})(model, x[:60], y[:60])
    assert not torch.equal(other.x_adv, one.x_adv)


def test_config_errors_name_the_parameter():
    with pytest.raises(ValueError, match="eps: LinfFastGradientAttack is a fixed-budget attack"):
        build_attack({"method": "foolbox", "attack": "LinfFastGradientAttack"})
    with pytest.raises(ValueError, match="foolbox-1 name; foolbox 3 calls it 'L2DeepFoolAttack'"):
        build_attack({"method": "foolbox", "attack": "DeepFoolL2Attack"})
    with pytest.raises(ValueError, match="no foolbox-3 counterpart"):
        build_attack({"method": "foolbox", "attack": "SLSQPAttack"})
    with pytest.raises(ValueError, match="attack: expected the name of a foolbox-3 attack class"):
        build_attack({"method": "foolbox", "attack": "NoSuchAttack"})
    with pytest.raises(ValueError, match="options: BoundaryAttack does not take"):
        build_attack({"method": "foolbox", "attack": "BoundaryAttack", "options": {"stepz": 3}})
    with pytest.raises(ValueError, match="criterion: foolbox attacks run with foolbox's Misclassification"):
        build_attack({"method": "foolbox", "attack": "L2DeepFoolAttack", "criterion": "btr"})


def test_foolbox1_table_covers_score_py_and_names_the_missing():
    import foolbox.attacks as fa

    assert len(FOOLBOX1_TO_3) == 22
    missing = sorted(k for k, v in FOOLBOX1_TO_3.items() if v is None)
    assert missing == ["AdditiveNoiseAttack", "ApproximateLBFGSAttack", "LBFGSAttack", "LocalSearchAttack",
                       "PrecomputedImagesAttack", "SLSQPAttack", "SaliencyMapAttack", "SinglePixelAttack"]
    names = {n.lower() for n in dir(fa)}
    for old in missing:  # foolbox 3 has nothing by that name, with or without the suffix
        stem = old.removesuffix("Attack").lower()
        assert not any(stem in n for n in names), old
    for old, new in FOOLBOX1_TO_3.items():
        if new:
            foolbox_class(new)  # a foolbox-3 fixed-budget or minimal attack
    entries = spec4_attacks()
    assert len(entries) == len({v for v in FOOLBOX1_TO_3.values() if v}) == 12
    for entry in entries.values():
        build_attack(entry)
    assert {"BoundaryAttack", "SaltAndPepperNoiseAttack"} <= GRADIENT_FREE and "L2DeepFoolAttack" not in GRADIENT_FREE


# --- the battery stage --------------------------------------------------------------------------------------------

ATTACKS = {
    "fb_fgsm": {"method": "foolbox", "attack": "LinfFastGradientAttack", "eps": GRID},
    "fb_deepfool": {"method": "foolbox", "attack": "L2DeepFoolAttack", "eps": None, "options": {"steps": 10}},
    "fgsm": {"method": "fgsm", "eps": GRID, "quantize": False},
    "fb_saltpepper": {"method": "foolbox", "attack": "SaltAndPepperNoiseAttack", "eps": None,
                      "options": {"steps": 300}},
}


def spec_of(classes) -> dict:
    return {"arch": "small_cnn", "arch_args": {}, "in_channels": 1, "image_size": 8, "num_classes": 10,
            "classes": list(classes), "mean": None, "std": None}


def run_battery(tmp_path, name: str, model_dir, n_images: int = 40):
    """Every attack through the real attack stage (40 seeded test images, all of them attacked), then the
    battery stage on the dumps."""
    dumps = {}
    for attack_name, entry in ATTACKS.items():
        cfg = {**entry, "batch_size": 1000, "images": "all", "subset": {"n": 40, "stream": "battery"}}
        out = tmp_path / "attacks" / name
        attack_stage.run(model_name=name, model={"dataset": "digits"}, dataset=DIGITS, seed=0,
                         attack_name=attack_name, attack=cfg, num_saved_images=0, model_dir=str(model_dir),
                         clean_h5=None, out_h5=str(out / f"{attack_name}.h5"),
                         out_norms_stats=str(out / f"{attack_name}_norms.csv"), out_eval=str(out / "eval.csv"),
                         out_confusion=str(out / "confusion.csv"), images_dir=str(out / "images"),
                         data_root="unused", device="cpu", log=lambda _: None)
        dumps[attack_name] = out / f"{attack_name}.h5"
    table, flags = battery.run(model_name=name, model={"dataset": "digits"}, dataset=DIGITS, seed=0,
                               battery={"n_images": n_images, "zero_gradient_share": 0.1, "black_box_margin": 0.1},
                               attacks=ATTACKS, attack_h5=dumps, model_dir=model_dir,
                               out_csv=tmp_path / f"{name}.csv", out_flags=tmp_path / f"{name}_flags.csv",
                               data_root="unused", device="cpu", log=lambda _: None)
    return dumps, pd.read_csv(tmp_path / f"{name}.csv"), pd.read_csv(tmp_path / f"{name}_flags.csv")


def recomputed_l2(path, x_test: np.ndarray, index_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, clean_correct, per-image smallest successful L2) of a dump, written here from its raw datasets: the
    L2 from the stored adversarial images and the clean test images where the dump stores images (single eps),
    else its per-eps L2."""
    import h5py

    with h5py.File(path, "r") as f:
        index, cc, success = f["index"][:], f["clean_correct"][:].astype(bool), f["success_eps"][:].astype(bool)
        if "x_adv" in f:
            x_adv = f["x_adv"][:]
            x_adv = x_adv.astype(np.float32) / 255 if x_adv.dtype == np.uint8 else x_adv
            clean = x_test[np.searchsorted(index_test, index)]
            l2 = np.sqrt(((x_adv.astype(np.float64) - clean) ** 2).reshape(len(index), -1).sum(1))[:, None]
        else:
            l2 = f["norm_eps_L2"][:]
    d = np.full(len(index), np.inf)
    for i in range(len(index)):
        hits = [l2[i, k if l2.shape[1] > 1 else 0] for k in range(success.shape[1]) if success[i, k]]
        if hits:
            d[i] = min(hits)
    return index, cc, d


@pytest.fixture(scope="module")
def digits_split():
    split = load_split(DIGITS, "test", "unused", 0)
    order = np.argsort(split.index)
    return split.x.numpy()[order].astype(np.float64), split.index[order]


def check_table(table: pd.DataFrame, dumps, digits_split) -> None:
    """The battery table against numpy on the per-image L2 recomputed from the dumps (recomputed_l2)."""
    x_test, index_test = digits_split
    per = {name: recomputed_l2(path, x_test, index_test) for name, path in dumps.items()}
    common = None
    for index, cc, _ in per.values():
        common = index[cc] if common is None else np.intersect1d(common, index[cc])
    assert 30 <= len(common) <= 40  # the 40 seeded images, less the misclassified ones: all scored (n_images 40)
    assert table["attack"].tolist() == [*ATTACKS, "all"]
    rows = table.set_index("attack")
    columns = []
    for name, (index, _, d) in per.items():
        d = d[np.isin(index, common)]
        columns.append(d)
        row = rows.loc[name]
        found = d[np.isfinite(d)]
        assert row["n"] == len(common) and row["successes"] == len(found)
        assert row["success_rate"] == pytest.approx(len(found) / len(common))
        for column, value in (("median_l2", np.median(found) if len(found) else np.nan),
                              ("mean_l2", np.mean(found) if len(found) else np.nan),
                              ("median_l2_sq", np.median(found ** 2) if len(found) else np.nan),
                              ("mean_l2_sq", np.mean(found ** 2) if len(found) else np.nan),
                              ("median_l2_all", np.median(d))):
            assert row[column] == pytest.approx(value, rel=1e-6, nan_ok=True), (name, column)
    best = np.stack(columns).min(0)
    assert rows.loc["all", "median_l2_all"] == pytest.approx(np.median(best), rel=1e-6)
    assert rows.loc["all", "successes"] == np.isfinite(best).sum()
    assert rows.loc["fb_saltpepper", "kind"] == "black_box"
    assert (rows.loc[["fb_fgsm", "fb_deepfool", "fgsm"], "kind"] == "gradient").all()


def test_battery_table_equals_a_recomputation_and_no_flag_fires_on_the_plain_cnn(tmp_path, digits_model,
                                                                               digits_split):
    model, *_ = digits_model
    split = load_split(DIGITS, "test", "unused", 0)
    save_trained(tmp_path / "model", model, spec_of(split.classes))
    dumps, table, flags = run_battery(tmp_path, "cnn", tmp_path / "model")
    check_table(table, dumps, digits_split)
    rows = table.set_index("attack")
    assert 0 < rows.loc["fb_fgsm", "success_rate"] < 1  # some images out of the grid's reach: inf in the medians
    assert np.isfinite(rows.loc["all", "median_l2_all"])
    # the dumps keep the battery's provenance: robustness reads the same files
    assert read_attrs(dumps["fb_deepfool"])["eps"].tolist() == [np.inf]

    assert flags["flag"].tolist() == ["black_box_more_successes", "black_box_smaller_median_l2",
                                      "robust_accuracy_rises", "zero_gradients"]
    assert not flags["fired"].any(), flags.to_string()
    assert (flags["model"] == "cnn").all()
    assert flags.set_index("flag").loc["zero_gradients", "value"] == 0


def test_flags_fire_on_a_lesci_one_hot_model(tmp_path, digits_model, digits_split):
    """LESCI with t = 0 projects every input: the output is one-hot(kNN vote), its input gradient exactly zero.
    The gradient attacks find nothing; salt-and-pepper (decision-based) fools the vote."""
    from advpipe.defenses import LESCI, fit_pca
    from advpipe.models.layers import activations

    model, *_ = digits_model
    train = load_split(DIGITS, "train", "unused", 0)
    with torch.no_grad():
        logits, a = activations(model, "penultimate", train.x)
    keep = logits.argmax(1) == train.y
    a, labels = a[keep], train.y[keep]
    w, mu = fit_pca(a, 8, center=True)
    lesci = {"layer": "penultimate", "k": 10, "t": 0.0, "output": "onehot", "center": True}
    net = LESCI(model, "penultimate", w, mu, (a - mu) @ w, labels, 10, k=10, t=0.0).eval()
    spec = {**spec_of(train.classes), "defense": {"lesci": {**lesci, "m": a.shape[1], "r": 8, "n": len(a)}}}
    save_trained(tmp_path / "lesci", net, spec)
    dumps, table, flags = run_battery(tmp_path, "lesci", tmp_path / "lesci")
    check_table(table, dumps, digits_split)
    rows = table.set_index("attack")
    assert (rows.loc[["fb_fgsm", "fb_deepfool", "fgsm"], "successes"] == 0).all()
    assert rows.loc["fb_saltpepper", "success_rate"] > 0.5
    fired = flags.set_index("flag")["fired"]
    assert fired["zero_gradients"] and fired["black_box_more_successes"] and fired["black_box_smaller_median_l2"]
    assert flags.set_index("flag").loc["zero_gradients", "value"] == 1.0
    assert not fired["robust_accuracy_rises"]


def test_battery_images_are_a_seeded_draw_of_the_common_correct_ones():
    dumps = {"a": {"index": np.arange(100), "clean_correct": np.arange(100) % 3 != 0},
             "b": {"index": np.arange(50, 150), "clean_correct": np.ones(100, dtype=bool)}}
    common = np.array([i for i in range(50, 100) if i % 3 != 0])
    chosen = battery.battery_images(dumps, 10, seed=5)
    assert len(chosen) == 10 and np.isin(chosen, common).all() and (np.diff(chosen) > 0).all()
    assert np.array_equal(chosen, battery.battery_images(dumps, 10, seed=5))
    assert np.array_equal(battery.battery_images(dumps, 1000, seed=5), common)


def test_rising_robust_accuracy_fires_on_gradient_attacks_only():
    success = np.array([[True, False, True], [True, False, True], [False, False, True], [False, False, False]])
    o = battery.Outcomes("p", {"method": "pgd", "norm": "linf"}, np.array([0.1, 0.2, 0.3]), success,
                         np.ones_like(success, dtype=float), minimal=False)
    row = battery.rising_flag({"p": o})
    assert row["fired"] and row["value"] == pytest.approx(1.0 - 0.5)  # 0.5 at eps 0.1, 1.0 at eps 0.2
    noise = battery.Outcomes("n", {"method": "foolbox", "attack": "LinfAdditiveUniformNoiseAttack"},
                             np.array([0.1, 0.2, 0.3]), success, np.ones_like(success, dtype=float), minimal=False)
    assert not battery.rising_flag({"n": noise})["fired"]  # fresh noise at each eps: not monotone on any model


def test_black_box_is_compared_at_the_budget_both_reach():
    """A fixed Linf grid up to 0.1 on 64 pixels reaches L2 0.8: a black-box attack's adversarials beyond that do
    not count against it; below it they do."""
    n = 10
    fgsm = battery.Outcomes("fgsm", {"method": "fgsm"}, np.array([0.05, 0.1]),
                            np.repeat((np.arange(n) < 5)[:, None], 2, 1), np.full((n, 2), 0.5), minimal=False)
    assert fgsm.reach(64) == pytest.approx(0.8)

    def boundary(d):
        return battery.Outcomes("b", {"method": "foolbox", "attack": "BoundaryAttack"}, np.array([np.inf]),
                                np.ones((n, 1), dtype=bool), np.full((n, 1), d), minimal=True)
    far = {r["flag"]: r for r in battery.black_box_flags({"fgsm": fgsm, "b": boundary(1.5)}, 64, 0.1)}
    assert not far["black_box_more_successes"]["fired"] and far["black_box_more_successes"]["value"] == -0.5
    assert not far["black_box_smaller_median_l2"]["fired"] and "L2 <= 0.8" in far["black_box_more_successes"]["detail"]
    near = {r["flag"]: r for r in battery.black_box_flags({"fgsm": fgsm, "b": boundary(0.3)}, 64, 0.1)}
    assert near["black_box_more_successes"]["fired"] and near["black_box_more_successes"]["value"] == 0.5
    assert near["black_box_smaller_median_l2"]["fired"] and near["black_box_smaller_median_l2"]["value"] == 0.0
