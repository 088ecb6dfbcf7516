"""Metrics: POP score of projections, ARA, robustness curves and eps50, and SPEC 5's gradient alignment
(advpipe.metrics.alignment, loaded on first use: it needs torch, the rest stays numpy-only for the scoring jobs)."""
from advpipe.metrics.ara import accuracy_curve, ara, ara_distances, ara_subset
from advpipe.metrics.pop import nearest_labels, pop_score, score_stats
from advpipe.metrics.robustness import (curve_from_distances, curve_from_success, eps50, eps50_from_curve,
                                        step_curve_from_distances)

ALIGNMENT = ("alignment_table", "alpha_dx", "alpha_x", "class_alignments", "cosine", "direction_gradient",
             "similarity")

__all__ = ["accuracy_curve", "ara", "ara_distances", "ara_subset", "curve_from_distances", "curve_from_success",
           "eps50", "eps50_from_curve", "nearest_labels", "pop_score", "score_stats", "step_curve_from_distances",
           *ALIGNMENT]


def __getattr__(name: str):
    if name in ALIGNMENT:
        from advpipe.metrics import alignment
        return getattr(alignment, name)
    raise AttributeError(f"module 'advpipe.metrics' has no attribute {name!r}")
