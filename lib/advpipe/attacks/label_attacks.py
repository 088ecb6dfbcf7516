"""SPEC 3 attacks (label_representations attack.py, cdu890 attack_v3.py) as batched functions in the
NORMALISED input space.

Not registered Attacks: the shared interface works in [0,1] pixel space with normalisation inside the model,
while SPEC 3's eps, per-image clamp and (quirky) PGD clamp are all in the normalised space. Every function takes
`forward` (normalised input z -> raw model output: logits, or the label-space prediction), z = normalize(x),
class indices, and `loss_fn(output, classes) -> (B,)` per-sample losses (`label_loss(kind, labels,
"per_sample")`). The batch loss is the SUM of per-sample losses, so each image's input gradient is the one it
gets alone at batch size 1 (as the original), also summed over BIM steps. A batch mean would scale all of a
run's gradients by one 1/B, sign-neutral in exact arithmetic, but its rounding (1/B not a power of 2) and
underflow could flip near-zero entries of the accumulated sum, making results depend on B. Model in eval mode.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Forward = Callable[[Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

TARGET_SEED = 444  # the original's torch.manual_seed(444) for the target draws


def cross_entropy_per_sample(output: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(output, y, reduction="none")


def normalized_forward(model: nn.Module) -> Forward:
    """z -> raw output of a Classifier (logits) or LabelModel (label-space prediction), normalisation skipped."""
    if hasattr(model, "forward_normalized"):
        return model.forward_normalized
    return lambda z: model.head(model.body(z))


def input_gradient(forward: Forward, z: Tensor, classes: Tensor, loss_fn: LossFn) -> Tensor:
    """grad_z sum_i loss_fn(forward(z), classes)_i, i.e. each image's own per-image gradient."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(forward(z), classes).sum(), z)
    return grad


def target_generator() -> torch.Generator:
    """The CPU generator the original's targets come from: `torch.manual_seed(444)`, then one draw taken by
    `for data, target in test_loader` (a DataLoader iterator draws its workers' base seed on creation)."""
    gen = torch.Generator().manual_seed(TARGET_SEED)
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    return gen


def random_targets(y: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """One random target != y per image, drawn EXACTLY as the original: for each image in order,
    randint(0, C, (1,)) from a CPU generator (default: target_generator()), redrawn while it equals y.

    Reproduces the original's sequence (so its numbers), not only its distribution (uniform over the other
    classes). The loop is over integer draws only (microseconds each). Pass one generator through all batches
    of a test set, and draw for every image (the original also drew for initially wrong ones).
    """
    if num_classes < 2:
        raise ValueError(f"targeted attacks need >= 2 classes, got {num_classes}")
    gen = target_generator() if generator is None else generator
    out = []
    for label in y.tolist():
        t = int(torch.randint(0, num_classes, (1,), generator=gen))
        while t == label:
            t = int(torch.randint(0, num_classes, (1,), generator=gen))
        out.append(t)
    return torch.tensor(out, dtype=torch.int64, device=y.device)


def pgd_loss(labels: Tensor | None = None) -> LossFn:
    """torchattacks.PGD's loss per sample: CrossEntropyLoss(outputs, target). cdu890 handed it the class index
    for category models and the label TENSOR for label models, which CE reads as soft targets over dim 1
    (the 64 rows of a 64x64 output, the D entries of a vector); the rest is averaged per image."""
    if labels is None:
        return cross_entropy_per_sample

    def loss(output: Tensor, y: Tensor) -> Tensor:
        target = labels.to(output.device, output.dtype)[y]
        ce = F.cross_entropy(output, target, reduction="none")
        return ce.flatten(1).mean(1) if ce.dim() > 1 else ce
    return loss


def _per_image(v: Tensor, fn) -> Tensor:
    """Per-image reduction (min/max over all but the batch axis), shaped to broadcast against the image."""
    return fn(v.flatten(1), dim=1).values.view(-1, *([1] * (v.dim() - 1)))


def fgsm(forward: Forward, z: Tensor, classes: Tensor, eps: float, loss_fn: LossFn = cross_entropy_per_sample,
         targeted: bool = False) -> Tensor:
    """SPEC 3 FGSM. Untargeted (classes = true labels): clamp(z + eps*sign(g), min(z), max(z));
    targeted (classes = targets): clamp(z - eps*sign(g), ...), per-image min/max of the normalised image."""
    grad = input_gradient(forward, z, classes, loss_fn)
    step = -eps if targeted else eps
    z = z.detach()
    return torch.clamp(z + step * grad.sign(), _per_image(z, torch.min), _per_image(z, torch.max))


def bim(forward: Forward, z: Tensor, classes: Tensor, eps: float, loss_fn: LossFn = cross_entropy_per_sample,
        targeted: bool = False, steps: int = 5, alpha: float | None = None,
        accumulate_gradients: bool = True) -> Tensor:
    """SPEC 3 iterative attack: z_{k+1} = z + clip(z_k +- alpha*sign(g_k) - z, -eps, eps), alpha = eps/steps,
    no range clamp; "+" untargeted on the true label, "-" targeted on the target.

    accumulate_gradients=True (default) reproduces the original, which never zeroed the input gradient:
    g_k = sum_{j<=k} grad(z_j), per image. That is the code the SPEC 3 numbers came from; set False for the
    textbook BIM (g_k = grad(z_k)).
    """
    alpha = eps / steps if alpha is None else alpha
    step = -alpha if targeted else alpha
    z0 = z.detach()
    z_adv = z0.clone()
    g = torch.zeros_like(z0)
    for _ in range(steps):
        grad = input_gradient(forward, z_adv, classes, loss_fn)
        g = g + grad if accumulate_gradients else grad
        # Same operation order as the original's iterative_attack, for bit-identical iterates.
        z_adv = z0 + torch.clamp(z_adv + step * g.sign() - z0, -eps, eps)
    return z_adv


def pgd(forward: Forward, z: Tensor, y: Tensor, eps: float, alpha: float = 2 / 255, steps: int = 4,
        loss_fn: LossFn = cross_entropy_per_sample, generator: torch.Generator | None = None,
        random_start: bool = True, clamp_range: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """torchattacks.PGD as cdu890 attack_v3 called it (eps, alpha 2/255, 4 steps, random start, CE on the raw
    outputs), in torch. clamp_range=(0, 1) (default) reproduces its quirk: the start and every iterate are
    clamped to [0,1] although z is normalised; None drops that clamp. The random start is drawn from
    `generator` (torchattacks used the global RNG, so its exact draws are not reproducible anyway)."""
    z0 = z.detach()
    z_adv = z0.clone()
    if random_start:
        z_adv = z_adv + torch.empty_like(z0).uniform_(-eps, eps, generator=generator)
        if clamp_range is not None:
            z_adv = z_adv.clamp(*clamp_range)
    for _ in range(steps):
        grad = input_gradient(forward, z_adv, y, loss_fn)
        z_adv = z_adv + alpha * grad.sign()
        delta = torch.clamp(z_adv - z0, -eps, eps)
        z_adv = z0 + delta
        if clamp_range is not None:
            z_adv = z_adv.clamp(*clamp_range)
    return z_adv


def robust_accuracy(correct_clean: Tensor, correct_adv: Tensor) -> float:
    """SPEC 3 accuracy: #(initially correct AND still correct after the attack) / N; initially wrong = failure."""
    correct_clean, correct_adv = correct_clean.bool(), correct_adv.bool()
    if correct_clean.shape != correct_adv.shape or correct_clean.dim() != 1:
        raise ValueError(f"need two (N,) masks, got {tuple(correct_clean.shape)} and {tuple(correct_adv.shape)}")
    if len(correct_clean) == 0:
        raise ValueError("robust_accuracy of zero images is undefined")
    return (correct_clean & correct_adv).sum().item() / len(correct_clean)
