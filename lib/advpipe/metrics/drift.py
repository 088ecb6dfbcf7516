"""Implementation drift (issue 16 item 3b): the engine's FGSM, PGD and C&W L2 against foolbox 3's and torchattacks'
on the same images of the same model, as the share of images on which the two agree.

The same space. The engine states an attack's eps in its space ("pixels", "normalized" or bounds [lo, hi]: advpipe.
attacks.spaces), iterates there and clamps to the image of the pixel box. The peers take inputs in one scalar box
(foolbox: `bounds`; torchattacks: [0, 1], hard-coded), so they attack the same function of the same variable, moved
affinely onto the unit box: u = (z - a) / (b - a), with [a, b] the smallest scalar box holding the space's box
(per channel [lo_c, hi_c] for a normalised multi-channel model), eps and step sizes divided by (b - a). For a pixel
or a declared-range space ([0, 1], [-1, 1], ...) and for one-channel normalisation the two boxes are the same and
the peers run exactly the engine's attack; with per-channel boxes the peers' iterates are clamped to [a, b] and only
the returned adversarial to each channel's box (FGSM: the same result; PGD: the iterates between may differ where
the clamp binds). Each adversarial is then judged as the engine judges its own: class scores of the model's raw
output at z (a label model decoded to its nearest label, a one-logit model as (-d, d)), success = prediction !=
the true label (the images are correctly classified).

Matched settings. FGSM: one signed step of eps, no random start, no re-quantisation to the 1/255 grid (no peer
has it), CE of the class scores. PGD: L-inf, `steps` steps of `step_size`, random start off in all three (so any
disagreement is the implementation's, not the random draw's), delta projection then clamp (the order of all
three), CE. C&W L2: minimal attacks in pixel space; the engine's and foolbox's are the same algorithm (binary
search on c, Adam on tanh-space w, abort early) given the same settings (CW_SETTINGS, `steps` iterations per
search step). torchattacks.CW has no binary search: it is compared with the engine's C&W at that one c
(binary_search_steps 1, initial_const c, the same steps and step size), the same algorithm again. One difference
stays: the engine (as cleverhans) aborts early when the batch loss fell by less than 0.01% since the last check,
torchattacks only when it rose, so with many steps torchattacks runs on where the engine stops (measured on the
digits CNN: 0.99 agreement at 100 steps, 0.72 at 500).

Agreement. Fixed-budget attacks (FGSM, PGD): the share of images on which the engine and the peer agree on
success (both fool the model, or neither). C&W: the share on which both fail, or both succeed with L2 distances
within CW_RTOL of each other (relative to the larger): success alone says little for an unbounded attack that
fools almost every image, the distance is what a minimal attack reports. Also recorded: `pred_agreement`, the
share of images whose adversarial gets the same predicted class from both.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advpipe.attacks.base import Attack, build_attack
from advpipe.attacks.spaces import Space, class_scores, make_space

PEERS = ("foolbox", "torchattacks")
ATTACKS = ("fgsm", "pgd", "cw")

# C&W: two distances agree within 10% of the larger. The engine and foolbox run one algorithm and land within
# ~1e-5 (tests/test_cw_crosscheck.py); torchattacks' single c lands within a few percent at the median; a broken
# const update, margin or tanh mapping moves distances by far more.
CW_RTOL = 0.1
# C&W settings shared by all three (the search and step size of tests/test_cw_crosscheck.py); the iterations per
# search step come from the config (drift.cw_steps).
CW_SETTINGS = {"binary_search_steps": 5, "learning_rate": 1e-2, "initial_const": 1e-2}
TORCHATTACKS_CW_C = 1.0
# PGD's step: 2.5 eps / steps (Madry et al.), the same in all three.
PGD_STEP_FACTOR = 2.5

COLUMNS = ["model", "attack", "peer", "eps", "n", "agreement", "success_ours", "success_peer", "threshold", "flag",
           "pred_agreement", "note"]


class UnitBoxNet(nn.Module):
    """u in the unit box -> class scores of `model` at z = a + (b - a) u of `space`: the network the peers attack.
    The model is a submodule (torchattacks finds the device from its parameters)."""

    def __init__(self, model: nn.Module, space: Space, a: float, b: float):
        super().__init__()
        self.model = model
        self.__dict__["space"] = space
        self.a, self.width = a, b - a

    def forward(self, u: Tensor) -> Tensor:
        return class_scores(self.model, self.space.raw(self.a + self.width * u))


def scalar_box(space: Space) -> tuple[float, float]:
    """[a, b]: the smallest scalar box holding the space's (per-channel) box."""
    lo, hi = space.lo, space.hi
    return (float(torch.as_tensor(lo).min()), float(torch.as_tensor(hi).max()))


def clamp_to_space(z: Tensor, space: Space) -> Tensor:
    lo, hi = space.lo, space.hi
    if isinstance(lo, Tensor):
        lo, hi = lo.to(z.device), hi.to(z.device)
    return torch.clamp(z, lo, hi)


def ours_fixed_budget(kind: str, space: Any, eps: float, steps: int, step_size: float) -> Attack:
    """The engine's FGSM or PGD in the matched configuration (module docstring)."""
    common = {"eps": eps, "space": space, "loss": "ce", "quantize": False, "clamp": "box"}
    if kind == "fgsm":
        return build_attack({"method": "fgsm", **common})
    if kind == "pgd":
        return build_attack({"method": "pgd", **common, "steps": steps, "step_size": step_size,
                             "random_start": False, "projection": "delta"})
    raise ValueError(f"attack: expected fgsm or pgd, got {kind!r}")


def ours_cw(steps: int, peer: str = "foolbox") -> Attack:
    """The engine's C&W L2 in the configuration matched to `peer` (module docstring)."""
    if peer == "torchattacks":
        return build_attack({"method": "cw", "max_iterations": steps, "learning_rate": CW_SETTINGS["learning_rate"],
                             "binary_search_steps": 1, "initial_const": TORCHATTACKS_CW_C})
    return build_attack({"method": "cw", "max_iterations": steps, **CW_SETTINGS})


def pgd_step_size(eps: float, steps: int) -> float:
    return PGD_STEP_FACTOR * eps / steps


def _peer_fixed_budget(peer: str, kind: str, net: nn.Module, u: Tensor, y: Tensor, eps: float, steps: int,
                       step_size: float) -> Tensor:
    """The peer's FGSM/PGD on u (unit box; eps and step_size in u units) -> adversarial u."""
    if peer == "foolbox":
        import foolbox as fb
        if kind == "fgsm":
            attack = fb.attacks.LinfFastGradientAttack(random_start=False)
        else:
            attack = fb.attacks.LinfProjectedGradientDescentAttack(abs_stepsize=step_size, steps=steps,
                                                                   random_start=False)
        fmodel = fb.PyTorchModel(net, bounds=(0, 1), device=u.device)
        _, clipped, _ = attack(fmodel, u, fb.criteria.Misclassification(y), epsilons=eps)
        return clipped.detach()
    if peer == "torchattacks":
        import torchattacks
        if kind == "fgsm":
            attack = torchattacks.FGSM(net, eps=eps)
        else:
            attack = torchattacks.PGD(net, eps=eps, alpha=step_size, steps=steps, random_start=False)
        attack.set_device(u.device)
        return attack(u, y).detach()
    raise ValueError(f"peer: expected one of {list(PEERS)}, got {peer!r}")


def _peer_cw(peer: str, net: nn.Module, x: Tensor, y: Tensor, steps: int) -> Tensor:
    """The peer's C&W L2 on pixels x -> adversarial pixels (x itself where it found none)."""
    s = CW_SETTINGS
    if peer == "foolbox":
        import foolbox as fb
        attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=s["binary_search_steps"], steps=steps,
                                                  stepsize=s["learning_rate"], confidence=0,
                                                  initial_const=s["initial_const"], abort_early=True)
        raw, _, _ = attack(fb.PyTorchModel(net, bounds=(0, 1), device=x.device), x,
                           fb.criteria.Misclassification(y), epsilons=None)
        found = raw.flatten(1).abs().sum(1) > 0  # foolbox returns zeros where it never found one
        return torch.where(found.view(-1, *[1] * (x.dim() - 1)), raw, x).detach()
    if peer == "torchattacks":
        import torchattacks
        attack = torchattacks.CW(net, c=TORCHATTACKS_CW_C, kappa=0, steps=steps, lr=s["learning_rate"])
        attack.set_device(x.device)
        return attack(x, y).detach()
    raise ValueError(f"peer: expected one of {list(PEERS)}, got {peer!r}")


def _batches(n: int, batch_size: int, desc: str, progress: bool) -> Iterable[slice]:
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            yield slice(start, min(start + batch_size, n))
            bar.update(min(batch_size, n - start))


@torch.no_grad()
def _predict(model: nn.Module, space: Space, z: Tensor) -> Tensor:
    return class_scores(model, space.raw(z)).argmax(1)


def fixed_budget_outcomes(model: nn.Module, x: Tensor, y: Tensor, *, kind: str, space: Any, eps: float,
                          steps: int, step_size: float, peers: Iterable[str], ours: Attack | None = None,
                          batch_size: int = 128, progress: bool = True) -> dict[str, tuple[Any, Any]]:
    """{peer: (the engine's adversarial predictions (N,), the peer's, or the exception it raised)} on the pixels
    x (labels y). `ours` replaces the engine's attack (tests hand in a drifted one)."""
    ours = ours or ours_fixed_budget(kind, space, eps, steps, step_size)
    pred_ours = ours.run(model, x, y, batch_size=batch_size, progress=progress, desc=f"{kind} (ours)").pred
    sp = make_space(space, model)
    a, b = scalar_box(sp)
    net = UnitBoxNet(model, sp, a, b).eval()
    out: dict[str, tuple[Any, Any]] = {}
    for peer in peers:
        try:
            preds = []
            for s in _batches(len(x), batch_size, f"{kind} ({peer})", progress):
                z = sp.encode(x[s]).detach()
                u = ((z - a) / (b - a)).clamp(0.0, 1.0)
                u_adv = _peer_fixed_budget(peer, kind, net, u, y[s], eps / (b - a), steps, step_size / (b - a))
                preds.append(_predict(model, sp, clamp_to_space(a + (b - a) * u_adv, sp)))
            out[peer] = (pred_ours, torch.cat(preds))
        except Exception as err:  # a peer that cannot attack the model (or is not installed): recorded, not fatal
            out[peer] = (pred_ours, err)
    return out


def cw_outcomes(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, peers: Iterable[str],
                ours: Mapping[str, Attack] | None = None, batch_size: int = 128, progress: bool = True
                ) -> dict[str, tuple[Any, Any]]:
    """{peer: ((pred, L2 distance with inf where not fooled) of the engine's C&W matched to the peer, the same of
    the peer or the exception it raised)} on pixels x. `ours`: {peer: attack} replacing the engine's."""
    sp = make_space("pixels", model)
    net = UnitBoxNet(model, sp, 0.0, 1.0).eval()
    out: dict[str, tuple[Any, Any]] = {}
    for peer in peers:
        attack = (ours or {}).get(peer) or ours_cw(steps, peer)
        result = attack.run(model, x, y, batch_size=batch_size, progress=progress, desc=f"cw (ours, as {peer})")
        mine = (result.pred, result.distance)
        try:
            preds, dists = [], []
            for s in _batches(len(x), batch_size, f"cw ({peer})", progress):
                x_adv = _peer_cw(peer, net, x[s], y[s], steps).clamp(0.0, 1.0)
                pred = _predict(model, sp, x_adv)
                l2 = torch.linalg.vector_norm((x_adv - x[s]).flatten(1), dim=1)
                preds.append(pred)
                dists.append(torch.where(pred != y[s], l2, torch.full_like(l2, math.inf)))
            out[peer] = (mine, (torch.cat(preds), torch.cat(dists)))
        except Exception as err:
            out[peer] = (mine, err)
    return out


def fixed_budget_agreement(y: Tensor, pred_ours: Tensor, pred_peer: Tensor) -> dict[str, float]:
    """Shares of the n images: agreement on success, each side's success rate, agreement of the predictions."""
    ok_ours, ok_peer = pred_ours != y, pred_peer != y
    return {"agreement": (ok_ours == ok_peer).float().mean().item(), "success_ours": ok_ours.float().mean().item(),
            "success_peer": ok_peer.float().mean().item(),
            "pred_agreement": (pred_ours == pred_peer).float().mean().item()}


def cw_agreement(y: Tensor, ours: tuple[Tensor, Tensor], peer: tuple[Tensor, Tensor],
                 rtol: float = CW_RTOL) -> dict[str, float]:
    """As fixed_budget_agreement, agreement = both fail, or both succeed with distances within rtol of the larger."""
    (pred_o, d_o), (pred_p, d_p) = ours, peer
    ok_o, ok_p = torch.isfinite(d_o), torch.isfinite(d_p)
    both = ok_o & ok_p
    close = torch.zeros_like(both)
    close[both] = (d_o[both] - d_p[both]).abs() <= rtol * torch.maximum(d_o[both], d_p[both])
    agree = (~ok_o & ~ok_p) | close
    return {"agreement": agree.float().mean().item(), "success_ours": ok_o.float().mean().item(),
            "success_peer": ok_p.float().mean().item(), "pred_agreement": (pred_o == pred_p).float().mean().item()}


def rows(model_name: str, attack: str, eps: float, y: Tensor, outcomes: Mapping[str, tuple[Any, Any]],
         threshold: float, agreement: Callable[..., dict[str, float]], note: str = "") -> list[dict[str, Any]]:
    """One CSV row per peer; a peer that raised gets NaN shares, no flag, and its error as the note."""
    out = []
    for peer, (mine, value) in outcomes.items():
        row = {"model": model_name, "attack": attack, "peer": peer, "eps": eps, "n": len(y)}
        if isinstance(value, Exception):
            nan = float("nan")
            row.update(agreement=nan, success_ours=nan, success_peer=nan, threshold=threshold, flag=False,
                       pred_agreement=nan, note=f"{peer} failed: {type(value).__name__}: {value}"[:300])
        else:
            shares = agreement(y, mine, value)
            row.update(agreement=shares["agreement"], success_ours=shares["success_ours"],
                       success_peer=shares["success_peer"], threshold=threshold,
                       flag=bool(shares["agreement"] < threshold), pred_agreement=shares["pred_agreement"],
                       note=note)
            if shares["success_ours"] == 0 and shares["success_peer"] == 0:
                # agreement 1 by default: a model without a useful gradient (a LESCI vote) fools neither side
                row["note"] = "; ".join(filter(None, [note, "neither fooled any image: the agreement says nothing "
                                                      "of the implementations (no useful gradient?)"]))
        out.append(row)
    return out


def drift_rows(model: nn.Module, x: Tensor, y: Tensor, *, model_name: str, space: Any, eps: float,
               pgd_steps: int, cw_steps: int, threshold: float, peers: Iterable[str] = PEERS,
               batch_size: int = 128, progress: bool = True, log: Callable[[str], None] = print
               ) -> list[dict[str, Any]]:
    """The drift table of one model on pixels x with labels y (correctly classified images): FGSM and PGD at eps
    (in `space`), C&W L2 unbounded, each against every peer."""
    peers = list(peers)
    out = []
    step = pgd_step_size(eps, pgd_steps)
    for kind in ("fgsm", "pgd"):
        log(f"{kind} at eps {eps:g} ({space}){f', {pgd_steps} steps of {step:g}' if kind == 'pgd' else ''}")
        outcomes = fixed_budget_outcomes(model, x, y, kind=kind, space=space, eps=eps, steps=pgd_steps,
                                         step_size=step, peers=peers, batch_size=batch_size, progress=progress)
        out += rows(model_name, kind, eps, y, outcomes, threshold, fixed_budget_agreement)
    log(f"cw: {CW_SETTINGS['binary_search_steps']} search steps x {cw_steps} steps (torchattacks: one c = "
        f"{TORCHATTACKS_CW_C:g}, {cw_steps} steps, and the engine so)")
    outcomes = cw_outcomes(model, x, y, steps=cw_steps, peers=peers, batch_size=batch_size, progress=progress)
    out += rows(model_name, "cw", float("nan"), y, outcomes, threshold, cw_agreement,
                note=f"L2 within {CW_RTOL:g} relative, or both fail")
    for r in out:
        log(f"{r['attack']} vs {r['peer']}: agreement {r['agreement']:.3f} (ours {r['success_ours']:.3f}, "
            f"peer {r['success_peer']:.3f}){' FLAGGED' if r['flag'] else ''}{' ' + r['note'] if r['note'] else ''}")
    return out
