"""Metrics: POP score of projections, ARA (more to come: eps50, alignment, accuracies, label statistics)."""
from advpipe.metrics.ara import accuracy_curve, ara, ara_distances, ara_subset
from advpipe.metrics.pop import nearest_labels, pop_score, score_stats
from advpipe.metrics.robustness import (curve_from_distances, curve_from_success, eps50, eps50_from_curve,
                                        step_curve_from_distances)

__all__ = ["accuracy_curve", "ara", "ara_distances", "ara_subset", "curve_from_distances", "curve_from_success",
           "eps50", "eps50_from_curve", "nearest_labels", "pop_score", "score_stats", "step_curve_from_distances"]
