"""Defenses: wrappers that make a trained network into another Classifier (LESCI, SPEC 4)."""
from advpipe.defenses.lesci import LESCI, fit_pca, topk_cosine, vote, wrap_lesci

__all__ = ["LESCI", "fit_pca", "topk_cosine", "vote", "wrap_lesci"]
