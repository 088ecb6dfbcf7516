"""SPEC 3's attacks as the label study runs them: configurations of the shared attack engine, called on the
normalised images z themselves (the engine's core, `attack_batch`), so tests compare them bit for bit with the
per-image reference loops of spec3_reference.py."""
from __future__ import annotations

import torch

from advpipe.attacks import AttackContext, build_attack
from advpipe.attacks.spaces import Space, make_space


def engine_attack(name: str, eps: float, *, targeted: bool = False, accumulate_gradients: bool = True,
                  random_start: bool = True, clamp_range=(0.0, 1.0), alpha: float = 2 / 255, steps: int | None = None):
    common = {"eps": eps, "space": "normalized", "quantize": False}
    if targeted:
        common["criterion"] = {"kind": "targeted", "targets": "given"}
    if name == "fgsm":
        return build_attack({"method": "fgsm", "loss": "model", "clamp": "per_image", **common})
    if name == "bim":
        return build_attack({"method": "bim", "loss": "model", "clamp": "none", "steps": steps or 5,
                             "accumulate_gradients": accumulate_gradients, **common})
    return build_attack({"method": "pgd", "loss": "soft_ce", "steps": steps or 4, "step_size": alpha,
                         "random_start": random_start,
                         "clamp": list(clamp_range) if clamp_range is not None else "none", **common})


def attack_under_test(name, model, z, cls, eps, kind=None, labels=None, generator=None, space: Space | None = None,
                      **kw) -> torch.Tensor:
    """Batched engine attack `name` on z (normalised images of `model`, eval mode) -> adversarial z. cls: true
    labels, or the targets when targeted. `space` overrides the model's normalised space (a raw network)."""
    attack = engine_attack(name, eps, **kw)
    ctx = AttackContext(model, space or make_space("normalized", model))
    with torch.enable_grad():
        z_adv, _ = attack.attack_batch(ctx, z.detach(), cls, [generator])
    return z_adv[0]
