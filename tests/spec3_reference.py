"""Independent per-image references for SPEC 3's attacks, written from the originals, not from advpipe.

Sources (read for this file, re-stated, not copied):
- BoyuanChen/label_representations `utils/attack_{category,highdim,lowdim}_utils.py` (called by attack.py):
  `fgsm_attack`, `iterative_attack` and the `test_fgsm_*` / `test_iterative_*` loops;
- cdu890/robust_labels `utils/attack_{highdim,lowdim}_utils.py` `test_pgd_untargeted` (called by
  `train_attack/attack_v3.py`): `torchattacks.PGD(model, eps=epsilon, alpha=2/255, steps=4)` applied to
  `(data, target)`, and torchattacks' `PGD.forward` (Harry24k/adversarial-attacks-pytorch).

Everything here runs ONE image at a time (the originals' test loader has batch size 1), in plain torch, with the
originals' operation order, so that a batched implementation can be compared bit for bit:
- the loss of one image is the originals' batch-of-one loss: `cross_entropy(output, target)` for category
  models, `smooth_l1_loss(output, label_tensor_of_target)` (mean over the label elements) for label models,
  `nn.CrossEntropyLoss()(outputs, target)` inside PGD, where target is the class index for category models
  and the label TENSOR for label models (cdu890 handed the loader's target on);
- gradients go through `loss.backward()` into `data.grad`, which the iterative attack never zeroes (the
  original's running sum of input gradients); `accumulate=False` clears it before each step (textbook BIM);
- the FGSM clamp is to the image's own `min().item()` / `max().item()` in the normalised space;
- the iterative step is `last + alpha * sign(g)`, then `image + clamp(perturbed - image, -eps, eps)`, no range
  clamp; PGD is torchattacks' `adv + alpha * sign(g)`, `clamp(adv - images, -eps, eps)`, then
  `clamp(images + delta, 0, 1)` (the [0,1] clamp of normalised inputs, cdu890's quirk).

`model` is an advpipe Classifier or LabelModel in eval mode; the references call `model.head(model.body(z))`
on the normalised input z (what the originals' networks saw: their loaders normalised), never advpipe's attack
helpers. PGD's random start is passed in as `noise` (see `pgd_start_noise`), because torchattacks drew it from
the global RNG.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

TARGET_SEED = 444  # the originals' `gen = torch.manual_seed(444)` before each targeted loop


def network(model: nn.Module):
    """Normalised input -> raw output (logits, or the label-space prediction), as the originals' networks."""
    if model.training:
        raise ValueError("the originals attack a model in eval mode (model.eval())")
    return lambda z: model.head(model.body(z))


def _target(cls: Tensor, labels: Tensor | None) -> Tensor:
    """The loader's `target` for one image: the class index (1,) for category, its label tensor (1, *L) else."""
    if labels is None:
        return cls
    c = int(cls.item())
    return labels[c: c + 1]


def _loss(output: Tensor, cls: Tensor, labels: Tensor | None) -> Tensor:
    """attack_category_utils: cross_entropy(output, target); attack_{highdim,lowdim}_utils: smooth_l1_loss."""
    if labels is None:
        return nn.functional.cross_entropy(output, cls)
    return nn.functional.smooth_l1_loss(output, _target(cls, labels))


def original_targets(y: Tensor, num_classes: int) -> Tensor:
    """The targets of test_fgsm_targeted / test_iterative_targeted: `gen = torch.manual_seed(444)`, then for each
    (data, target) of the batch-size-1 test loader (whose iterator draws its base seed from that same global
    generator first), `randint(0, C, (1,), generator=gen)` redrawn while it equals the image's label."""
    out = []
    with torch.random.fork_rng(devices=[]):
        gen = torch.manual_seed(TARGET_SEED)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(y.cpu()), batch_size=1)
        for (target,) in loader:
            adv_target = torch.randint(0, num_classes, (1,), generator=gen)
            while adv_target.item() == target.item():
                adv_target = torch.randint(0, num_classes, (1,), generator=gen)
            out.append(adv_target.item())
    return torch.tensor(out, dtype=torch.int64)


def _fgsm_attack(image: Tensor, epsilon: float, data_grad: Tensor) -> Tensor:
    sign_data_grad = data_grad.sign()
    perturbed_image = image + epsilon * sign_data_grad
    return torch.clamp(perturbed_image, image.min().item(), image.max().item())


def fgsm(model: nn.Module, z: Tensor, cls: Tensor, eps: float, labels: Tensor | None = None,
         targeted: bool = False) -> Tensor:
    """test_fgsm_untargeted (cls = true labels, +eps) / test_fgsm_targeted (cls = targets, -eps), one image at a
    time, for every image (the originals skip initially wrong ones; `accuracy` below does too)."""
    net = network(model)
    out = []
    for i in range(len(z)):
        data = z[i:i + 1].clone().detach()
        data.requires_grad = True
        output = net(data)
        loss = _loss(output, cls[i:i + 1], labels)
        model.zero_grad()
        loss.backward()
        data_grad = data.grad.data
        out.append(_fgsm_attack(data, -eps if targeted else eps, data_grad).detach())
    model.zero_grad(set_to_none=True)
    return torch.cat(out)


def _iterative_attack(image: Tensor, last_perturbed_image: Tensor, epsilon: float, alpha: float,
                      data_grad: Tensor) -> Tensor:
    sign_data_grad = data_grad.sign()
    perturbed_image = last_perturbed_image + alpha * sign_data_grad
    total_grad = perturbed_image - image
    total_grad = torch.clamp(total_grad, -epsilon, epsilon)
    perturbed_image = image + total_grad
    return perturbed_image.clone()


def bim(model: nn.Module, z: Tensor, cls: Tensor, eps: float, labels: Tensor | None = None,
        targeted: bool = False, steps: int = 5, accumulate: bool = True) -> Tensor:
    """test_iterative_untargeted / test_iterative_targeted with alpha = eps / steps (attack.py), one image at a
    time. accumulate=True is the original (data.grad never zeroed); False zeroes it before every backward."""
    alpha = eps / steps
    net = network(model)
    out = []
    for i in range(len(z)):
        data = z[i:i + 1].clone().detach()
        data.requires_grad = True
        output = net(data)
        orig_data = data.clone()
        perturbed_data = data
        for _ in range(steps):
            loss = _loss(output, cls[i:i + 1], labels)
            model.zero_grad()
            if not accumulate:
                perturbed_data.grad = None
            loss.backward()
            data_grad = perturbed_data.grad.data
            perturbed_data.data = _iterative_attack(orig_data, perturbed_data, eps, -alpha if targeted else alpha,
                                                    data_grad)
            output = net(perturbed_data)
        out.append(perturbed_data.detach().clone())
    model.zero_grad(set_to_none=True)
    return torch.cat(out)


def pgd_start_noise(z: Tensor, eps: float, generator: torch.Generator) -> Tensor:
    """torchattacks' `torch.empty_like(adv_images).uniform_(-eps, eps)`, drawn ONCE over the whole batch tensor
    (the order a batched implementation draws in); row i is image i's start offset."""
    return torch.empty_like(z).uniform_(-eps, eps, generator=generator)


def pgd(model: nn.Module, z: Tensor, y: Tensor, eps: float, noise: Tensor | None, labels: Tensor | None = None,
        alpha: float = 2 / 255, steps: int = 4, clamp01: bool = True) -> Tensor:
    """torchattacks.PGD(model, eps, alpha, steps) (random start when `noise` is given) applied to one image at a
    time with the loader's target: CrossEntropyLoss(outputs, class index) for category models, (outputs, label
    tensor) as soft targets for label models. clamp01=False drops the [0,1] clamps (not torchattacks)."""
    net = network(model)
    loss = nn.CrossEntropyLoss()
    clamp = (lambda t: torch.clamp(t, min=0, max=1)) if clamp01 else (lambda t: t)
    out = []
    for i in range(len(z)):
        images = z[i:i + 1].clone().detach()
        target = _target(y[i:i + 1], labels).clone().detach()
        adv_images = images.clone().detach()
        if noise is not None:
            adv_images = adv_images + noise[i:i + 1]
            adv_images = clamp(adv_images).detach()
        for _ in range(steps):
            adv_images.requires_grad = True
            outputs = net(adv_images)
            cost = loss(outputs, target)
            grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
            adv_images = adv_images.detach() + alpha * grad.sign()
            delta = torch.clamp(adv_images - images, min=-eps, max=eps)
            adv_images = clamp(images + delta).detach()
        out.append(adv_images)
    return torch.cat(out)


def is_correct(model: nn.Module, z: Tensor, y: Tensor, labels: Tensor | None = None) -> Tensor:
    """(B,) bool, one image at a time: category `output.max(1)[1] == target`; label models is_nn_target
    (MSELoss(reduction="none") of the output repeated C times against every label, mean over the label axes,
    argmin = nearest label, compared with the target's label tensor)."""
    net = network(model)
    out = []
    with torch.no_grad():
        for i in range(len(z)):
            output = net(z[i:i + 1])
            if labels is None:
                out.append(output.max(1, keepdim=True)[1].item() == y[i].item())
                continue
            target = _target(y[i:i + 1], labels)
            mse = nn.MSELoss(reduction="none")
            d = mse(output.repeat(labels.shape[0], *[1] * (output.dim() - 1)), labels)
            for _ in range(labels.dim() - 1):
                d = d.mean(-1)
            output_nn = labels[torch.argmin(d)]
            out.append(bool((output_nn - target).abs().sum() < 1e-5))
    return torch.tensor(out)


def adversarial(model: nn.Module, z: Tensor, y: Tensor, eps: float, attack: str, labels: Tensor | None = None,
                targets: Tensor | None = None, noise: Tensor | None = None, **kw) -> Tensor:
    """The adversarial images of attack fgsm, fgsm_targeted, bim, bim_targeted (targets: the target class per
    image) or pgd (noise: its start offsets, or None for no random start); kw goes to the attack (steps,
    accumulate, alpha, clamp01)."""
    targeted = attack.endswith("_targeted")
    cls = targets if targeted else y
    if attack in ("fgsm", "fgsm_targeted"):
        return fgsm(model, z, cls, eps, labels, targeted=targeted)
    if attack in ("bim", "bim_targeted"):
        return bim(model, z, cls, eps, labels, targeted=targeted, **kw)
    if attack == "pgd":
        return pgd(model, z, y, eps, noise, labels, **kw)
    raise ValueError(f"unknown attack {attack!r}")


def still_correct(model: nn.Module, z: Tensor, y: Tensor, eps: float, attack: str, labels: Tensor | None = None,
                  targets: Tensor | None = None, noise: Tensor | None = None, **kw) -> Tensor:
    """(B,) bool: correct after the attack (arguments as `adversarial`); at eps 0 the clean correctness, as the
    originals do not attack then (their `elif epsilon == 0: correct += 1; continue`)."""
    if eps == 0:
        return is_correct(model, z, y, labels)
    return is_correct(model, adversarial(model, z, y, eps, attack, labels, targets, noise, **kw), y, labels)


def accuracy(model: nn.Module, z: Tensor, y: Tensor, eps: float, attack: str, labels: Tensor | None = None,
             targets: Tensor | None = None, noise: Tensor | None = None, **kw) -> float:
    """The originals' reported accuracy: correct / len(test_loader), where an image counts if it was classified
    correctly AND is still correct after the attack (arguments as `adversarial`)."""
    clean = is_correct(model, z, y, labels)
    still = still_correct(model, z, y, eps, attack, labels, targets, noise, **kw)
    return (clean & still).sum().item() / len(y)


def normalize(model: nn.Module, x: Tensor) -> Tensor:
    """The loaders' Normalize(mean, std) with the model's stored statistics: (x - mean) / std per channel."""
    return (x - model.mean) / model.std
