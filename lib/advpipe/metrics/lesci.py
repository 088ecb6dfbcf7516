"""LESCI's metrics (SPEC 4, projection_metrics.py), with the original's +0.001 in each denominator."""
from __future__ import annotations

import numpy as np

EPS = 0.001


def lesci_metrics(label: np.ndarray, pred: np.ndarray, knn_label: np.ndarray, projected: np.ndarray) -> dict:
    """accuracy (of the LESCI output), accuracy_identity (correct among identity-mapped), accuracy_projection
    (the kNN label correct among projected), percentage_identity_mapped (a fraction in [0, 1]), and the counts."""
    label, pred, knn_label = (np.asarray(a) for a in (label, pred, knn_label))
    projected = np.asarray(projected, dtype=bool)
    identity = ~projected
    return {"accuracy": float(np.mean(pred == label)),
            "accuracy_identity": float(((pred == label) & identity).sum() / (identity.sum() + EPS)),
            "accuracy_projection": float(((knn_label == label) & projected).sum() / (projected.sum() + EPS)),
            "percentage_identity_mapped": float(identity.mean()),
            "n": int(len(label)), "n_projected": int(projected.sum())}
