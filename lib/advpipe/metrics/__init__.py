"""Metrics: POP score of projections (more to come: ARA, eps50, alignment, accuracies, label statistics)."""
from advpipe.metrics.pop import nearest_labels, pop_score, score_stats

__all__ = ["nearest_labels", "pop_score", "score_stats"]
