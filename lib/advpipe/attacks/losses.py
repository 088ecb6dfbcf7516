"""Loss hooks of the attack engine: per-sample losses l(raw, classes) -> (B,), large where the model does
not predict `classes`. Untargeted attacks ascend l(., y), targeted ones descend l(., target).

The batch loss is the SUM of per-sample losses, so each image's input gradient is the one it gets alone at batch
size 1 (as SPEC 3's per-image originals), whatever the batch: a batch mean would rescale it by 1/B, sign-neutral in
exact arithmetic but not under rounding and underflow.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from advpipe.attacks.spaces import class_scores

# (raw output, classes) -> (B,); class scores, where a loss needs them, are model.decode(raw)
LossFn = Callable[[Tensor, Tensor], Tensor]
ScoreLoss = Callable[[Tensor, Tensor], Tensor]  # (class scores, classes) -> (B,)

LOSSES = ("ce", "model", "soft_ce", "smoothl1", "cw", "logit")


def check_loss(name: str) -> str:
    """`name` if it is a loss hook, else ValueError naming the accepted ones (checked when an attack is built)."""
    if name not in LOSSES:
        raise ValueError(f"loss: expected one of {list(LOSSES)}, got {name!r}")
    return name


def label_tensor(model: nn.Module) -> Tensor | None:
    """The (C, *L) label targets of a label-representation model (SPEC 3), None for a plain classifier."""
    return getattr(model, "labels", None)


def ce(scores: Tensor, classes: Tensor) -> Tensor:
    """Cross-entropy of the class scores (the logits of a plain classifier)."""
    return F.cross_entropy(scores, classes, reduction="none")


def cw_margin(scores: Tensor, classes: Tensor, confidence: float = 0.0) -> Tensor:
    """C&W margin max_{j != c} Z_j - Z_c (+ confidence), unclipped so that the gradient never vanishes early."""
    real = scores.gather(1, classes[:, None]).squeeze(1)
    other = scores.scatter(1, classes[:, None], float("-inf")).amax(1)
    return other - real + confidence


def one_logit(raw: Tensor, classes: Tensor) -> Tensor:
    """(1 - 2y) * d for a one-logit binary model with decision value d (SPEC 5): large when d points to 1 - y."""
    d = raw.reshape(len(raw), -1)
    if d.shape[1] == 1:
        d = d[:, 0]
    elif d.shape[1] == 2:  # two logits: the decision value is their difference
        d = d[:, 1] - d[:, 0]
    else:
        raise ValueError(f"loss 'logit' needs a one-logit (or two-logit) binary model, got outputs {tuple(raw.shape)}")
    return (1 - 2 * classes.to(d.dtype)) * d


def make_loss(name: str, model: nn.Module) -> LossFn:
    """The loss hook `name` for `model`.

    ce: cross-entropy of the class scores; cw: the C&W margin; logit: the one-logit loss (1-2y)*d;
    smoothl1: SmoothL1 (beta 1) of a label model's raw output to labels[c], mean over the label elements;
    model: the model's training loss (smoothl1 for a label model, ce otherwise; SPEC 3's FGSM/BIM);
    soft_ce: torchattacks' CrossEntropyLoss on the raw output, which cdu890 handed the label TENSOR as soft
    targets for label models (over dim 1, the rest averaged per image); for a plain classifier, ce.
    """
    labels = label_tensor(model)
    if name == "model":
        name = "ce" if labels is None else "smoothl1"
    if name == "soft_ce" and labels is None:
        name = "ce"
    if name in ("ce", "cw"):
        on_scores: ScoreLoss = ce if name == "ce" else cw_margin
        # Decoding costs a label model B x C x |label| floats: only the losses on class scores pay it.
        return lambda raw, classes: on_scores(class_scores(model, raw), classes)
    if name == "logit":
        return one_logit
    if name in ("smoothl1", "soft_ce"):
        if labels is None:
            raise ValueError("loss 'smoothl1' needs a label-representation model (a model with a `label:` key)")
        if name == "smoothl1":
            def smoothl1(raw: Tensor, classes: Tensor) -> Tensor:
                target = labels.to(raw.device, raw.dtype)[classes]
                return F.smooth_l1_loss(raw, target, beta=1.0, reduction="none").flatten(1).mean(1)
            return smoothl1

        def soft_ce(raw: Tensor, classes: Tensor) -> Tensor:
            target = labels.to(raw.device, raw.dtype)[classes]
            out = F.cross_entropy(raw, target, reduction="none")
            return out.flatten(1).mean(1) if out.dim() > 1 else out
        return soft_ce
    raise ValueError(f"loss: expected one of {list(LOSSES)}, got {name!r}")
