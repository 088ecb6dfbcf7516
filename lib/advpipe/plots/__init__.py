"""Figures: vrapi's projection scatter plots (more to come: robustness curves, image grids)."""
from advpipe.plots.scatter import (DARK, LIGHT, CleanPoints, data_limits, plot_by_class, plot_clean,
                                   plot_projection_figures, save_figure, scatter_clean)

__all__ = ["DARK", "LIGHT", "CleanPoints", "data_limits", "plot_by_class", "plot_clean",
           "plot_projection_figures", "save_figure", "scatter_clean"]
