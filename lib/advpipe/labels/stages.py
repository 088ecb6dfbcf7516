"""The label-representations study's own stages (SPEC 3): what only this study has, the label sets, their
statistics and images, and its summaries of shared results (the attack table and figures from the shared attack
dumps, the data-efficiency table from the models' validation metrics). Its models and attacks are entries of the
shared `models:` and `attacks:` (advpipe.labels.study.expand)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from advpipe.data import dataset_info
from advpipe.io.atomic import atomic_path
from advpipe.io.h5 import DumpError, read_attrs, read_dump
from advpipe.io.tables import write_csv
from advpipe.labels import label_stats_table, load_label_file, make_labels, plot_label_images
from advpipe.io.model_spec import read_spec
from advpipe.plots.figures import new_figure, save_figure

COLUMNS = ["label", "level", "attack", "eps", "accuracy", "clean_accuracy", "n_images"]


def make_label_set(*, label: str, kind: str, dataset: Mapping[str, Any], seed: int, out_path: str | os.PathLike,
                   data_root: str = "data", log=print) -> np.ndarray:
    """Write the (C, *shape) targets of label `label` (of `kind`) to out_path (.npy), from the seed and the
    dataset's classes (speech labels say the class names)."""
    info = dataset_info(dataset, data_root, seed)
    labels = make_labels(kind, info.num_classes, seed, info.classes)
    log(f"label {label}: {kind}, shape {labels.shape}, range [{labels.min():.4g}, {labels.max():.4g}]")
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, labels, allow_pickle=False)
    return labels


def label_stats(label_paths: Mapping[str, str | os.PathLike], num_classes: int, class_names: Sequence[str],
                out_csv: str | os.PathLike, figure_stem: str | os.PathLike, log=print) -> pd.DataFrame:
    """Statistics table (shape, range, entropy, mean pairwise L1/L2) and label-image figure of the label sets."""
    labels = {name: load_label_file(path, num_classes) for name, path in label_paths.items()}
    table = label_stats_table(labels)
    log(table.to_string(index=False))
    write_csv(table, out_csv)
    plot_label_images(labels, figure_stem, class_names=class_names)
    return table


def attack_rows(label: str, level: float, attack: str, dump: str | os.PathLike) -> list[dict[str, Any]]:
    """SPEC 3 rows of one attack dump: accuracy at each eps = #(initially correct AND correct after the attack)
    / N (initially wrong images count as failures), and the clean accuracy."""
    d = read_dump(dump, ["label", "clean_correct", "pred_eps"])
    eps = read_attrs(dump)["eps"]
    n = len(d["label"])
    if n == 0:
        raise DumpError(f"{dump}: no attacked images; expected the label study's test images")
    still = d["clean_correct"][:, None] & (d["pred_eps"] == d["label"][:, None])
    clean = int(d["clean_correct"].sum()) / n
    return [{"label": label, "level": float(level), "attack": attack, "eps": float(e), "accuracy": int(c) / n,
             "clean_accuracy": clean, "n_images": n} for e, c in zip(eps, still.sum(0))]


def attack_table(dumps: Mapping[str, Mapping[str, str | os.PathLike]], level: float, out_csv: str | os.PathLike,
                 figure_dir: str | os.PathLike, dpi: int = 100, log=print) -> pd.DataFrame:
    """One table of every label's attack rows ({label: {attack: dump}}, the models of one level), and per attack
    a figure of accuracy against eps per label."""
    rows = [row for label, by_attack in dumps.items() for attack, dump in by_attack.items()
            for row in attack_rows(label, level, attack, dump)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(table, out_csv)
    for attack, rows in table.groupby("attack", sort=False):
        log(f"{attack}:\n" + rows.pivot_table(index="label", columns="eps", values="accuracy", sort=False)
            .to_string(float_format="{:.3f}".format))
        fig = new_figure((5.0, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        sns.lineplot(data=rows, x="eps", y="accuracy", hue="label", style="label", markers=True, dashes=False,
                     ax=ax)
        ax.set_xlabel("eps (normalised input space)")
        ax.set_ylabel("accuracy (correct before and after)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{attack}, level {rows['level'].iloc[0]:g}%")
        ax.legend(frameon=False, fontsize="small", ncol=2)
        fig.tight_layout()
        save_figure(fig, Path(figure_dir) / f"accuracy_vs_eps_{attack}", dpi=dpi, transparent=False)
    return table


EFFICIENCY_COLUMNS = ["label", "level", "train_images", "best_epoch", "val_accuracy", "val_loss", "test_accuracy"]


def data_efficiency(model_dirs: Sequence[str | os.PathLike], out_csv: str | os.PathLike,
                    figure_stem: str | os.PathLike, dpi: int = 100, log=print) -> pd.DataFrame:
    """Validation and test accuracy of every (label, level) model (read from model.json), and a figure of
    validation accuracy against the share of training data (SPEC 3's data-efficiency table)."""
    rows = []
    for folder in model_dirs:
        spec = read_spec(folder)
        if "label" not in spec or "metrics" not in spec or "val_accuracy" not in spec["metrics"]:
            raise ValueError(f"{Path(folder) / 'model.json'}: not a label-study model (no label / validation "
                             "metrics); expected a folder the label_train rule wrote")
        m = spec["metrics"]
        rows.append({"label": spec["label"]["name"], "level": spec["level"],
                     "train_images": spec["split"]["train_images"], "best_epoch": m["best_epoch"],
                     "val_accuracy": m["val_accuracy"], "val_loss": m["val_loss"],
                     "test_accuracy": m["test_accuracy"]})
    table = pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS).sort_values(["label", "level"], kind="stable")
    write_csv(table, out_csv)
    log(table.pivot_table(index="label", columns="level", values="val_accuracy", sort=False)
        .to_string(float_format="{:.3f}".format))
    fig = new_figure((5.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    sns.lineplot(data=table, x="level", y="val_accuracy", hue="label", style="label", markers=True, dashes=False,
                 ax=ax)
    if table["level"].nunique() > 1 and table["level"].max() / table["level"].min() >= 10:
        ax.set_xscale("log")
    ax.set_xticks(sorted(table["level"].unique()), [f"{v:g}" for v in sorted(table["level"].unique())])
    ax.set_xlabel("training data (% of the training split)")
    ax.set_ylabel("validation accuracy (best epoch)")
    ax.legend(frameon=False, fontsize="small", ncol=2)
    fig.tight_layout()
    save_figure(fig, Path(figure_stem), dpi=dpi, transparent=False)
    return table

