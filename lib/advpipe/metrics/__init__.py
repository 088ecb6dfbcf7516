"""Metrics: POP score of projections, ARA (more to come: eps50, alignment, accuracies, label statistics)."""
from advpipe.metrics.ara import accuracy_curve, ara, ara_distances, ara_subset
from advpipe.metrics.pop import nearest_labels, pop_score, score_stats

__all__ = ["accuracy_curve", "ara", "ara_distances", "ara_subset", "nearest_labels", "pop_score", "score_stats"]
