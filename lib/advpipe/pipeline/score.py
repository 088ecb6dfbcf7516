"""Stage score: the POP score of every (model, attack, projection, trial) (SPEC 1 score.py)."""
from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd
from tqdm import tqdm

from advpipe.io.tables import write_csv
from advpipe.metrics.pop import pop_score, score_stats
from advpipe.pipeline.project import aligned_adversarial, correct_clean, read_projection


def score_table(entries: Iterable[Mapping[str, str]]) -> pd.DataFrame:
    """Long table of POP scores; entries carry model, attack, projection, trial and the files
    `path` (projection), `clean` (test representations) and `attack_path` (attack dump).

    Labels are read once per model and adversarial predictions once per (model, attack), not per file.
    """
    cleans: dict[str, dict] = {}
    advs: dict[tuple[str, str], dict] = {}
    rows = []
    for e in tqdm(list(entries), desc="score", unit="file"):
        if e["model"] not in cleans:
            cleans[e["model"]] = correct_clean(e["clean"], keys=())
        clean = cleans[e["model"]]
        key = (e["model"], e["attack"])
        if key not in advs:
            advs[key] = aligned_adversarial(e["attack_path"], clean, e["clean"], keys=())
        adv = advs[key]
        z = read_projection(e["path"], clean, e["attack_path"])
        value = pop_score(z["clean"], clean["label"], z["adv"], adv["pred"])
        rows.append({"model": e["model"], "attack": e["attack"], "projection": e["projection"],
                     "trial": int(e["trial"]), "metric": "pop", "value": value})
    return pd.DataFrame(rows)


def run(entries, out_scores: str, out_stats: str, log=print) -> None:
    scores = score_table(entries)
    write_csv(scores, out_scores)
    stats = score_stats(scores)
    write_csv(stats, out_stats)
    log(stats.to_string())
