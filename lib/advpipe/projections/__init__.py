"""2-D projections of representations: PCA, UMAP, t-SNE, parametric UMAP; joint or out-of-sample (SPEC 1).
Each on a backend (library) chosen per projection: backends.py."""
from typing import Any

from advpipe.projections.backends import BACKENDS
from advpipe.projections.project import PROJECTIONS, backend, estimator_options, gpu_request, project, project_many

__all__ = ["BACKENDS", "PROJECTIONS", "ParametricUMAP", "backend", "estimator_options", "gpu_request", "project",
           "project_many"]


def __getattr__(name: str) -> Any:
    # ParametricUMAP pulls in torch; load it only when asked, so `import advpipe.projections` stays fast.
    if name == "ParametricUMAP":
        from advpipe.projections.parametric_umap import ParametricUMAP
        return ParametricUMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
