"""Label-representation heads and models (SPEC 3, Chen et al. 2021): networks that regress a fixed label tensor
per class, decoded by 1-nearest label, and their training losses."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advpipe.models.base import Classifier

# Label kinds of SPEC 3; `normal_dim=D`, `uniform_gap=g` (cdu890) and `file=path` (a user's .npy) by prefix.
LABEL_KINDS = ("category", "speech", "shuffle", "uniform", "composite", "random", "lowdim", "bert", "glove")
LABEL_KIND_PREFIXES = ("normal_dim", "uniform_gap", "file")


def check_kind(kind: str) -> str:
    """kind unchanged if it is a SPEC 3 label kind, else ValueError."""
    if kind in LABEL_KINDS or (isinstance(kind, str) and kind.split("=")[0] in LABEL_KIND_PREFIXES):
        return kind
    raise ValueError(f"unknown label kind {kind!r}; known: {list(LABEL_KINDS)} and "
                     f"{[p + '=...' for p in LABEL_KIND_PREFIXES]}")


class HighDimHead(nn.Module):
    """SPEC 3 high-dimensional head: representation (B, F) -> label-space prediction (B, S, S), S = 64 or 48.

    BN1d -> LeakyReLU -> Linear(F->64) -> (64,1,1) -> ConvT(64->64, k4 (k3 for 48), s1, p0) -> 4x4 (3x3)
    -> 3 x [BN, LeakyReLU, ConvT(k4, s2, p1)] to 8/16/32 channels -> [BN, LeakyReLU] -> ConvT(8->1) -> S x S.
    No output activation. The channel axis of size 1 is dropped, as the original's `view(-1, 64, 64)`, so
    the output has the shape of one class label (labels are (C, S, S)).
    """

    def __init__(self, in_features: int, out_size: int = 64):
        super().__init__()
        if out_size not in (64, 48):
            raise ValueError(f"out_size must be 64 or 48 (SPEC 3), got {out_size!r}")
        self.out_size = out_size
        self.fc = nn.Sequential(nn.BatchNorm1d(in_features), nn.LeakyReLU(), nn.Linear(in_features, 64))
        first_kernel = 4 if out_size == 64 else 3  # 1 -> 4 -> ... -> 64, or 1 -> 3 -> ... -> 48
        layers: list[nn.Module] = [nn.ConvTranspose2d(64, 64, first_kernel, 1, 0)]
        for c_in, c_out in ((64, 32), (32, 16), (16, 8), (8, 1)):
            layers += [nn.BatchNorm2d(c_in), nn.LeakyReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, feats: Tensor) -> Tensor:
        z = self.fc(feats)[:, :, None, None]
        return self.deconvs(z)[:, 0]


class VectorHead(nn.Linear):
    """Linear(F -> dim) for vector labels (lowdim, glove, normal_dim, uniform_gap): the CategoryModel head."""

    def __init__(self, in_features: int, dim: int):
        super().__init__(in_features, dim)


def nearest_label_scores(output: Tensor, labels: Tensor) -> Tensor:
    """Class scores = -mean((output - label_c)^2) over the label elements: (B, *L), (C, *L) -> (B, C).

    argmax = 1-nearest-label decoding. Computed as the original (`MSELoss(reduction="none")` on the broadcast
    difference, then `.mean(-1)` once per label axis), not as |a|^2 - 2ab + |b|^2, so the values and hence the
    argmin on ties are bit-identical to the direct definition (the expansion cancels catastrophically near a
    label). Costs B*C*prod(L) floats of memory: 164 MB for B=100, C=100, 64x64 labels.
    """
    if output.shape[1:] != labels.shape[1:]:
        raise ValueError(f"output shape {tuple(output.shape)} does not match label shape {tuple(labels.shape[1:])}")
    d = (output.unsqueeze(1) - labels.unsqueeze(0)).square()
    for _ in range(labels.dim() - 1):
        d = d.mean(-1)
    return -d


class LabelModel(Classifier):
    """A Classifier whose head regresses a label tensor; `forward` returns nearest-label class scores.

    Reuses the backbone's normalisation buffers and `body` (shared modules, not copies) and replaces its head
    by `head`. `predict_label(x)` is the raw label-space output; `forward_features(x)` returns
    (scores (B, C), representation (B, F)) from one pass, so attacks and metrics that expect class scores
    work unchanged. `labels` (C, *L) is a float32 buffer (saved in the state_dict).
    """

    def __init__(self, backbone: Classifier, head: nn.Module, labels: Tensor):
        super().__init__(backbone.mean.shape[1])
        self.mean.copy_(backbone.mean)
        self.std.copy_(backbone.std)
        self.body = backbone.body
        self.head = head
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.float32).clone())

    @property
    def num_classes(self) -> int:
        return self.labels.shape[0]

    def forward_normalized(self, z: Tensor) -> Tensor:
        """Label-space prediction from an already normalised input (the space of SPEC 3's attacks)."""
        return self.head(self.body(z))

    def predict_label(self, x: Tensor) -> Tensor:
        """x in [0,1] -> label-space prediction (B, *L)."""
        return self.forward_normalized(self.normalize(x))

    def decode(self, output: Tensor) -> Tensor:
        """Label-space prediction -> class scores (B, C), argmax = nearest label."""
        return nearest_label_scores(output, self.labels)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.body(self.normalize(x))
        return self.decode(self.head(feats)), feats


def label_head(in_features: int, label_shape: tuple[int, ...]) -> nn.Module:
    """The head SPEC 3 gives labels of `label_shape` (one class's tensor): VectorHead for (D,), HighDimHead for
    (64, 64) or (48, 48). Other shapes have no head in the originals: ValueError naming the shape."""
    shape = tuple(int(s) for s in label_shape)
    if len(shape) == 1:
        return VectorHead(in_features, shape[0])
    if len(shape) == 2 and shape[0] == shape[1] and shape[0] in (64, 48):
        return HighDimHead(in_features, shape[0])
    raise ValueError(f"no label head for labels of shape {shape}: expected (D,) vectors or 64x64 / 48x48 images")


def wrap_label_model(backbone: Classifier, labels: Tensor) -> LabelModel:
    """backbone with its linear head replaced by the head for `labels` (C, *L), decoding to class scores."""
    if not isinstance(getattr(backbone, "head", None), nn.Linear):
        raise ValueError(f"{type(backbone).__name__} has no linear head to replace by a label head")
    return LabelModel(backbone, label_head(backbone.head.in_features, tuple(labels.shape[1:])), labels)


def label_loss(kind: str, labels: Tensor | None = None,
               reduction: str = "mean") -> Callable[[Tensor, Tensor], Tensor]:
    """loss(output, y) with y the class indices: CE for "category", SmoothL1 (beta 1) to labels[y] otherwise.

    reduction "mean" = the training loss (nn.CrossEntropyLoss() / nn.SmoothL1Loss(): mean over the batch and
    the label elements); "per_sample" = (B,) losses, each the loss of that image alone at batch size 1 (what
    the attacks sum, so a batched gradient is each image's own).
    """
    check_kind(kind)
    if reduction not in ("mean", "per_sample"):
        raise ValueError(f"reduction must be 'mean' or 'per_sample', got {reduction!r}")
    if kind == "category":
        red = "mean" if reduction == "mean" else "none"
        return lambda output, y: F.cross_entropy(output, y, reduction=red)
    if labels is None:
        raise ValueError(f"label kind {kind!r} needs the label tensor (C, ...)")

    def loss(output: Tensor, y: Tensor) -> Tensor:
        target = labels.to(output.device, output.dtype)[y]
        if reduction == "mean":
            return F.smooth_l1_loss(output, target, beta=1.0)
        return F.smooth_l1_loss(output, target, beta=1.0, reduction="none").flatten(1).mean(1)
    return loss
