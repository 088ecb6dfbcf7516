"""The label-representations study's summaries (SPEC 3): label statistics and images, the attack table with
its accuracy-vs-eps figures, and the data-efficiency table and figure."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import seaborn as sns

from advpipe.io.tables import write_csv
from advpipe.labels import label_stats_table, load_label_file, plot_label_images
from advpipe.models.checkpoint import read_spec
from advpipe.pipeline.label_attack import COLUMNS
from advpipe.plots.figures import new_figure, save_figure


def label_stats(label_paths: Mapping[str, str | os.PathLike], num_classes: int, class_names: Sequence[str],
                out_csv: str | os.PathLike, figure_stem: str | os.PathLike, log=print) -> pd.DataFrame:
    """Statistics table (shape, range, entropy, mean pairwise L1/L2) and label-image figure of the label sets."""
    labels = {name: load_label_file(path, num_classes) for name, path in label_paths.items()}
    table = label_stats_table(labels)
    log(table.to_string(index=False))
    write_csv(table, out_csv)
    plot_label_images(labels, figure_stem, class_names=class_names)
    return table


def read_tables(paths: Sequence[str | os.PathLike], columns: Sequence[str]) -> pd.DataFrame:
    """Concatenate CSV tables, each checked to hold `columns` (a missing column names the file)."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected the columns {list(columns)}")
        frames.append(frame[list(columns)])
    return pd.concat(frames, ignore_index=True)


def attack_table(paths: Sequence[str | os.PathLike], out_csv: str | os.PathLike, figure_dir: str | os.PathLike,
                 dpi: int = 100, log=print) -> pd.DataFrame:
    """One table of every label's attack rows, and per attack a figure of accuracy against eps per label."""
    table = read_tables(paths, COLUMNS)
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

