"""Stage attack: attack the correctly classified test images (SPEC 1 attack.py), keep per-sample outcomes."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from advpipe.attacks import ATTACKS, build_attack
from advpipe.attacks.budget import budget_problems, space_widths
from advpipe.config import ConfigError
from advpipe.data import Split, load_split
from advpipe.io.h5 import DumpError, provenance, read_dump, write_dump
from advpipe.io.images import save_class_samples
from advpipe.io.tables import write_csv
from advpipe.models import load_trained
from advpipe.models.checkpoint import check_fits_data
from advpipe.pipeline.represent import eval_tables, forward_all
from advpipe.pipeline.specs import attack_stream
from advpipe.runtime import derive_seed, seed_everything, select_device

# Config keys that describe the job, not the attack's own parameters.
_NOT_ATTACK_PARAMS = ("batch_size", "images", "subset")


def stored_images(x: np.ndarray) -> np.ndarray:
    """Images as attacked: uint8 when every value lies on the 1/255 grid (re-quantised attacks), else float32."""
    grid = np.rint(x * 255).astype(np.uint8)
    # Compared in x's own dtype, so that load_x_adv gives back exactly the attacked float32 values.
    return grid if np.array_equal(grid.astype(x.dtype) / x.dtype.type(255), x) else x


def norms_stats(norms: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """norms_stats.csv: count, mean, std, min, quartiles and max of each norm over the attacked images."""
    return pd.DataFrame({k: v for k, v in norms.items()}).describe().T.rename_axis("norm").reset_index()


def engine_params(attack_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The attack's own parameters (build_attack's) of a config entry: without the job's keys (batch_size, images,
    subset), the `name` a resolved training attack carries, and a norm the method has only one of."""
    params = {k: v for k, v in attack_cfg.items() if k not in (*_NOT_ATTACK_PARAMS, "name")}
    cls = ATTACKS.get(params.get("method"))
    if cls is not None and "norm" not in cls.__dataclass_fields__:
        params.pop("norm", None)  # C&W (L2) and the search (RMS) have one norm: the schema states it
    return params


def configured_attack(attack_name: str, attack_cfg: Mapping[str, Any], seed: int | str):
    """The Attack of config entry `attacks.<attack_name>`; a bad parameter is a ConfigError naming its key."""
    params = engine_params(attack_cfg)
    params["seed"] = seed
    try:
        return build_attack(params)
    except ValueError as err:  # the attack's own check, "<parameter>: <what is wrong>"
        field, sep, what = str(err).partition(": ")
        if sep and field in attack_cfg:
            raise ConfigError(f"config key 'attacks.{attack_name}.{field}': {what}") from err
        raise ConfigError(f"config key 'attacks.{attack_name}': {err}") from err


def check_budget(attack_name: str, attack: Mapping[str, Any], net: torch.nn.Module, shape: tuple[int, ...],
                 dataset_name: str) -> None:
    """ConfigError when the data shows what check-config could not: a budget these inputs cannot hold (an npz
    dataset's shape, the statistics of a model normalised by its dataset; advpipe.attacks.budget)."""
    # a vector sample (SPEC 5's spheres) is one channel of D values
    channels, pixels = (1, shape[0]) if len(shape) == 1 else (shape[0], int(np.prod(shape[1:])))
    std = getattr(net, "std", None)
    normalize = {"std": std.flatten().tolist()} if std is not None else "none"
    widths = space_widths(attack.get("space", "pixels"), normalize, channels)
    for key, problem in budget_problems(attack, widths, pixels):
        raise ConfigError(f"config key 'attacks.{attack_name}.{key}': {problem} (on dataset {dataset_name!r}, "
                          f"images {'x'.join(map(str, shape))})")


def attacked_images(split: Split, attack_cfg: Mapping[str, Any], clean: Mapping[str, np.ndarray] | None,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the test split, clean correctness) of the images attacked: the correctly classified ones
    (`images: correct`, SPEC 1; their clean dump says which), or all (`images: all`, SPEC 3 counts initially
    wrong ones as failures), optionally a seeded subset (`subset: {n, stream}`, the same images for every model
    when the stream is the same)."""
    positions = np.arange(len(split))
    sub = attack_cfg.get("subset")
    if sub:
        positions = np.sort(np.random.default_rng(derive_seed(seed, sub.get("stream", "attack_subset")))
                            .choice(len(split), size=sub["n"], replace=False)) if sub["n"] < len(split) else positions
    if attack_cfg.get("images", "correct") == "correct":
        positions = positions[clean["correct"][positions]]
        return positions, np.ones(len(positions), dtype=bool)
    return positions, None


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, attack_name: str,
        attack: Mapping[str, Any], num_saved_images: int, model_dir: str, clean_h5: str | None, out_h5: str,
        out_norms_stats: str, out_eval: str, out_confusion: str, images_dir: str, data_root: str = "data",
        device: str = "auto", log=print) -> None:
    """Attack one model's test images with one configured attack (its resolved entries: advpipe.pipeline.specs
    attack_job) and dump per-image outcomes: success and prediction per eps (N, K) with the eps grid as attrs,
    the clean correctness, norms, the smallest distance of minimal attacks, the targets of targeted ones; for a
    single eps also the adversarial images and their representations (the vrapi projections read them)."""
    stream = attack_stream(model_name, attack_name, model)
    # The engine derives its per-eps streams from this name, as derive_seed(seed, stream, eps) would.
    engine = configured_attack(attack_name, attack, f"{seed}/{stream}")  # a bad parameter fails before any work
    seed_everything(derive_seed(seed, stream))
    device = select_device(device)
    split = load_split(dataset, "test", data_root, seed)
    check_fits_data(model_dir, tuple(split.x.shape[1:]), split.classes, model["dataset"])
    clean = None
    if attack.get("images", "correct") == "correct":
        clean = read_dump(clean_h5, ["index", "label", "pred", "correct"], num_classes=len(split.classes),
                          classes_from=f"dataset {model['dataset']!r}")
        if not np.array_equal(clean["index"], split.index):
            raise DumpError(f"{clean_h5}: dataset 'index' ({len(clean['index'])} rows) does not match the test split "
                            f"of {model['dataset']!r} ({len(split.index)} images); expected the representation "
                            "dump of that split (stale dump? delete it and rerun)")
    keep, clean_correct = attacked_images(split, attack, clean, seed)
    x, label = split.x[keep], split.y[keep]
    net = load_trained(model_dir, device)
    check_budget(attack_name, attack, net, tuple(split.x.shape[1:]), model["dataset"])
    bs = attack["batch_size"]
    if clean_correct is None:
        with torch.no_grad():
            clean_correct = (torch.cat([net(xb.to(device)).argmax(1).cpu() for xb in x.split(bs)]) == label).numpy()
    # Untargeted on the model's own prediction, which equals the label on the correctly classified images.
    log(f"{attack_name} on {model_name}: {len(keep)} test images ({int(clean_correct.sum())} correctly classified)")
    grid = engine.is_grid
    result = engine.run(net, x.to(device), label.to(device), batch_size=bs, desc=attack_name)
    k_eps = len(engine.eps_list)
    success = result.success.view(k_eps, -1).cpu().numpy()
    pred = result.pred.view(k_eps, -1).cpu().numpy()
    norms = {k: v.view(k_eps, -1).cpu().numpy() for k, v in result.norms.items()}
    label_np = label.numpy().astype(np.int64)
    arrays = {"index": split.index[keep], "label": label_np, "clean_correct": clean_correct,
              "success_eps": success.T, "pred_eps": pred.T}
    if engine.criterion_.targeted:
        arrays["target"] = result.classes.cpu().numpy()
    if result.distance is not None:  # minimal attacks: the smallest adversarial distance found (inf: none)
        arrays["distance"] = result.distance.cpu().numpy()
    last = -1  # tables and images describe the largest eps of a grid
    if grid:
        arrays.update({f"norm_eps_{k}": v.T for k, v in norms.items()})
        pred_last = pred[last]
        # PNGs of the largest eps; an attack stated in another space may leave [0,1] there (SPEC 3's BIM)
        x_adv = result.x_adv[last].detach().cpu().clamp(0.0, 1.0)
    else:
        x_adv = result.x_adv.detach().cpu()
        out = forward_all(net, x_adv, bs, desc="represent adversarial")
        pred_last = out["pred"]
        arrays.update({"x_adv": stored_images(x_adv.numpy()), **out, "success": out["pred"] != label_np,
                       "correct": out["pred"] == label_np, **{f"norm_{k}": v[0] for k, v in norms.items()}})
    attrs = provenance({"model": model, "attack": attack, "attack_name": attack_name}, derive_seed(seed, stream))
    attrs.update(eps=np.asarray(engine.eps_list, dtype=np.float64), space=str(engine.space))
    write_dump(out_h5, arrays, attrs)
    write_csv(norms_stats({k: v[last] for k, v in norms.items()}), out_norms_stats)
    evaluation, confusion = eval_tables(label_np, pred_last, split.classes)
    write_csv(evaluation, out_eval)
    write_csv(confusion, out_confusion, index=True)
    # Adversarial PNGs under the ids of the original images (SPEC 1), per true class.
    save_class_samples(x_adv.numpy(), label_np, arrays["index"], split.classes, images_dir, num_saved_images)
    log(f"{attack_name}: success rate {success[last].mean():.4f} at eps {engine.eps_list[last]:g}, "
        f"mean L2 {norms['L2'][last].mean():.4f}, mean Linf {norms['Linf'][last].mean():.4f} ({engine.space} space)")


def load_x_adv(path: str) -> np.ndarray:
    """The adversarial inputs of an attack dump as float32 in [0,1], whatever their stored type."""
    x = read_dump(path, ["x_adv"])["x_adv"]
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
