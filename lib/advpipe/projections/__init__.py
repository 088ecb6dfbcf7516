"""2-D projections of representations: PCA, UMAP, t-SNE, parametric UMAP; joint or out-of-sample (SPEC 1)."""
from typing import Any

from advpipe.projections.project import PROJECTIONS, estimator_options, project, project_many

__all__ = ["PROJECTIONS", "ParametricUMAP", "estimator_options", "project", "project_many"]


def __getattr__(name: str) -> Any:
    # ParametricUMAP pulls in torch; load it only when asked, so `import advpipe.projections` stays fast.
    if name == "ParametricUMAP":
        from advpipe.projections.parametric_umap import ParametricUMAP
        return ParametricUMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
