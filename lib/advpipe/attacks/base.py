"""The Attack interface (DESIGN "The three interfaces"): configured once, run on (classifier, x, y) in batches."""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advpipe.attacks.criteria import Criterion, build_criterion, least_likely, random_targets
from advpipe.attacks.losses import LossFn
from advpipe.attacks.norms import perturbation_norms
from advpipe.attacks.spaces import Space, check_space, class_scores, make_space


@dataclass
class AttackResult:
    """Per-sample attack output (DESIGN "Attack"), foolbox-3 shaped: with a grid of K eps, x_adv (K, N, ...),
    success and pred (K, N) and each norm (K, N); with a single eps (a number in the config) the K axis is
    dropped, as foolbox does. x_adv is in pixels [0,1] (None when not stored, or when the caller left the success
    check to itself); norms are measured in the attack's space, where its eps is stated. distance (N,): the
    smallest adversarial distance a minimal-perturbation attack found (inf where none), else None. classes (N,):
    the class each sample was attacked on (the label or prediction left, or the target)."""

    x_adv: Tensor | None
    success: Tensor | None
    pred: Tensor | None = None
    norms: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    distance: Tensor | None = None
    classes: Tensor | None = None

    @staticmethod
    def cat(results: list[AttackResult], dim: int = 0) -> AttackResult:
        """Concatenate batch results along the sample axis `dim` (1 for grid-shaped results)."""
        if len(results) == 1:  # one batch: no copy
            return results[0]

        def cat(values):
            return None if values[0] is None else torch.cat(values, dim)
        first = results[0]
        return AttackResult(
            cat([r.x_adv for r in results]), cat([r.success for r in results]), cat([r.pred for r in results]),
            {k: torch.cat([r.norms[k] for r in results], dim) for k in first.norms},
            None if first.distance is None else torch.cat([r.distance for r in results]),
            None if first.classes is None else torch.cat([r.classes for r in results]))


def parse_fraction(v: float | int | str, name: str = "value") -> float:
    """A non-negative finite number from a float/int or a string such as "3/255" or "0.01" (config eps values)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"{name}: expected a number or a fraction string like '3/255', got {v!r}")
    try:
        value = float(Fraction(v.strip())) if isinstance(v, str) else float(v)
    except (ValueError, ZeroDivisionError) as err:
        raise ValueError(f"{name}: malformed number {v!r} (expected e.g. 0.01 or '3/255')") from err
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {v!r}")
    return value


def check_int(name: str, v: Any, minimum: int) -> int:
    """An int (not bool) >= minimum, else ValueError naming the parameter."""
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    return v


def seed_int(seed: int | str) -> int:
    """An integer seed: the seed itself, or the one derived from a named stream."""
    if isinstance(seed, int):
        return seed
    from advpipe.runtime import derive_seed
    return derive_seed(seed)


def check_bool(name: str, v: Any) -> bool:
    """A real bool (1 or "true" from a hand-written config are refused), else ValueError naming the parameter."""
    if not isinstance(v, bool):
        raise ValueError(f"{name}: expected true or false, got {v!r}")
    return v


def check_positive(name: str, v: Any) -> float:
    """A number (or fraction string) > 0, else ValueError naming the parameter."""
    value = parse_fraction(v, name)
    if value == 0:
        raise ValueError(f"{name}: must be > 0, got {v!r}")
    return value


def parse_eps(v: Any, name: str = "eps") -> tuple[list[float], bool]:
    """(the K budgets, whether a grid was given): a number or fraction string -> ([eps], False); a non-empty list
    of them -> (list, True), as foolbox takes one epsilon or a list of them."""
    if isinstance(v, (list, tuple)):
        if not v:
            raise ValueError(f"{name}: an eps grid needs at least one value, got []")
        return [parse_fraction(e, f"{name}[{i}]") for i, e in enumerate(v)], True
    return [parse_fraction(v, name)], False


@dataclass(kw_only=True)
class Attack(ABC):
    """An attack configured once (DESIGN "Attack"), run on (classifier, x in [0,1], y) in batches.

    Shared parameters: `space` (where eps is stated: "pixels", "normalized" or bounds [lo, hi]; advpipe.attacks.
    spaces), `criterion` (advpipe.attacks.criteria) and `seed` (random starts, random masks). Subclasses are
    dataclasses (their fields are the accepted parameters) and implement `attack_batch`. `seed` is an integer,
    or the path of a named random stream ("0/labels/pgd/category"), from which per-eps seeds derive as
    advpipe.runtime.derive_seed derives every target's: derive_seed(seed, eps) equals derive_seed(0, "labels",
    "pgd", "category", eps), so a stage keeps the streams it had.
    """

    space: Any = "pixels"
    criterion: Any = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.space = check_space(self.space)
        self.criterion_ = build_criterion(self.criterion)
        if not (isinstance(self.seed, str) and self.seed) and check_int("seed", self.seed, 0) is None:
            raise AssertionError  # unreachable: check_int raises or returns the seed

    @property
    def minimal(self) -> bool:
        """A minimal-perturbation attack: reports the smallest adversarial distance it found."""
        return False

    @property
    def eps_list(self) -> list[float]:
        """The K budgets this attack answers (a minimal attack: its search budget, inf when unbounded: eps None)."""
        return [math.inf] if self.eps is None else parse_eps(self.eps)[0]

    @property
    def is_grid(self) -> bool:
        return self.eps is not None and parse_eps(self.eps)[1]

    def eps_per_pass(self, batch: int) -> int:
        """How many eps of the grid one batched pass over `batch` images takes (GradientAttack fuses them)."""
        return 1

    def make_generators(self, device: torch.device) -> list[torch.Generator | None]:
        """One RNG per eps for attacks that draw random numbers, seeded from `seed` (else None)."""
        return [None] * len(self.eps_list)

    @abstractmethod
    def attack_batch(self, ctx: AttackContext, z: Tensor, classes: Tensor,
                     generators: list[torch.Generator | None]) -> tuple[Tensor, Tensor | None]:
        """z (B, ...) in the attack's space, classes (B,) to leave (or reach, when targeted) -> (z_adv (K, B, ...)
        in the same space, detached; distance (B,) for minimal attacks, else None)."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, check_success: bool = True,
                 targets: Tensor | None = None) -> AttackResult:
        """Attack one batch (no progress bar)."""
        return self.run(model, x, y, batch_size=max(len(x), 1), progress=False, check_success=check_success,
                        targets=targets)

    def run(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, progress: bool = True,
            desc: str | None = None, check_success: bool = True, targets: Tensor | None = None,
            store: bool = True) -> AttackResult:
        """Attack x in batches with a progress bar; every eps's RNG runs through all batches in order.

        Success is evaluated on each returned adversarial with the criterion (so it always matches its
        prediction); `check_success=False` skips that forward pass (x_adv only). BatchNorm layers attack with
        their running statistics and leave them untouched, also when the model is training (adversarial
        training, ALP): see frozen_norm_stats. `targets` are the given targets of a targeted criterion.
        """
        check_int("batch_size", batch_size, 1)
        check_inputs(x, y)
        crit = self.criterion_
        with frozen_norm_stats(model):
            ctx = AttackContext(model, make_space(self.space, model))
            classes = reference_classes(crit, model, x, y, batch_size, targets)
            generators = self.make_generators(x.device)
            results = []
            with tqdm(total=len(x), desc=desc or type(self).__name__, unit="img", disable=not progress) as bar:
                for xb, cb in zip(x.split(batch_size), classes.split(batch_size)):
                    results.append(self._run_batch(ctx, xb, cb, generators, check_success, store))
                    bar.update(len(xb))
        if not results:  # empty input: keep shapes and dtypes
            k = len(self.eps_list)
            empty = torch.zeros(k, 0, dtype=torch.bool, device=x.device)
            norms = {name: torch.zeros(k, 0, device=x.device) for name in ("L0", "L1", "L2", "Linf", "RMS")}
            result = AttackResult(x.clone().unsqueeze(0).expand(k, *x.shape), empty, empty.long(),
                                  norms, torch.zeros(0, device=x.device) if self.minimal else None, classes)
        else:
            result = AttackResult.cat(results, dim=1)
            result.classes = classes
        return result if self.is_grid else squeeze_grid(result)

    def _run_batch(self, ctx: AttackContext, x: Tensor, classes: Tensor, generators: list[torch.Generator | None],
                   check_success: bool, store: bool) -> AttackResult:
        space, crit = ctx.space, self.criterion_
        z = space.encode(x).detach()
        with torch.enable_grad():  # callers may sit under no_grad; only the input is differentiated
            z_adv, distance = self.attack_batch(ctx, z, classes, generators)
        success = pred = None
        k_eps = len(z_adv)
        # A minimal attack hands back one adversarial for every eps (its distance says where it counts): it is
        # scored and measured once, and every eps is answered from that outcome, not by K identical passes.
        distinct = z_adv[:1] if self.minimal else z_adv
        if check_success:
            with torch.no_grad():  # the grid's adversarials in the passes the attack itself fused
                per_pass = self.eps_per_pass(len(z))
                scores = torch.cat([class_scores(ctx.model, space.raw(part.flatten(0, 1)))
                                    .unflatten(0, part.shape[:2]) for part in distinct.split(per_pass)])
                scores = scores.expand(k_eps, -1, -1)
            pred = scores.argmax(2)
            success = crit.success(scores.flatten(0, 1), classes.repeat(k_eps)).view(k_eps, -1)
            if distance is not None:  # a minimal attack succeeds at eps where its adversarial is that close
                success &= torch.stack([distance <= eps for eps in self.eps_list])  # no host copy of the grid
        norms = perturbation_norms(z.expand_as(distinct).flatten(0, 1), distinct.flatten(0, 1))
        norms = {k: v.view(distinct.shape[:2]).expand(k_eps, -1) for k, v in norms.items()}
        # decoded per sample: a model's per-channel statistics broadcast over (B, C, H, W), not over the grid axis
        x_adv = ((z_adv if space.name == "pixels" else space.decode(z_adv.flatten(0, 1)).unflatten(0, z_adv.shape[:2]))
                 if store or not check_success else None)
        return AttackResult(x_adv, success, pred, norms, distance)


@dataclass
class AttackContext:
    """What an attack needs of its model: the model (in eval mode for its norm layers) and the input space."""

    model: nn.Module
    space: Space

    def input_gradient(self, z: Tensor, classes: Tensor, loss_fn: LossFn) -> Tensor:
        """grad_z sum_i loss_fn(raw(z), classes)_i: each sample's own gradient (advpipe.attacks.losses). The one
        place the engine differentiates; w.r.t. the input only, so no gradient lands in the model."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss_fn(self.space.raw(z), classes).sum(), z)
        return grad


def squeeze_grid(result: AttackResult) -> AttackResult:
    """Drop the K axis of a single-eps result (foolbox: one epsilon in, no epsilon axis out)."""
    def first(v):
        return None if v is None else v[0]
    return AttackResult(first(result.x_adv), first(result.success), first(result.pred),
                        {k: v[0] for k, v in result.norms.items()}, result.distance, result.classes)


@contextmanager
def frozen_norm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in eval mode while attacking: they normalise with their running statistics and do not
    update them, so an attack inside training (adversarial training, ALP) leaves the statistics as the training
    batches set them, and a batch's adversarials do not depend on each other. Restored afterwards."""
    switched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in switched:
        m.eval()
    try:
        yield
    finally:
        for m in switched:
            m.train()


def reference_classes(crit: Criterion, model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                      targets: Tensor | None) -> Tensor:
    """The class each sample is attacked on: the label or the clean prediction (untargeted, btr), or the target."""
    if crit.targeted and crit.targets == "given":
        if targets is None or targets.shape != y.shape:
            raise ValueError(f"criterion targets 'given': pass targets of shape {tuple(y.shape)}")
        return targets.to(y.device)
    needs_scores = crit.on == "prediction" and not crit.targeted or crit.targeted and crit.targets == "least_likely"
    if crit.targeted and crit.targets == "random":
        num_classes = int(getattr(model, "num_classes", 0)) or clean_scores(model, x[:1], 1).shape[1]
        return random_targets(y.cpu(), num_classes, crit.seed, crit.skip).to(y.device)
    if not needs_scores:
        return y
    scores = clean_scores(model, x, batch_size)
    return least_likely(scores) if crit.targeted else scores.argmax(1)


@torch.no_grad()
def clean_scores(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    # empty input: (0, 1) on the input's device, so that argmax/argmin over it work
    return torch.cat([model(xb) for xb in x.split(batch_size)]) if len(x) else torch.zeros(0, 1, device=x.device)


def check_inputs(x: Tensor, y: Tensor) -> None:
    """x floating point in [0,1], one integer label per sample."""
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor in [0,1], got dtype {x.dtype}")
    if y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    lo, hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    if bool((lo < 0) | (hi > 1)):  # one host sync, not two
        raise ValueError("x must lie in [0,1] (attacks take pixels; normalisation is inside the model)")


ATTACKS: dict[str, type[Attack]] = {}
A = TypeVar("A", bound=type[Attack])


def register(method: str) -> Callable[[A], A]:
    """Class decorator: make an Attack buildable from config as {"method": method, ...}."""
    def deco(cls: A) -> A:
        ATTACKS[method] = cls
        return cls
    return deco


def build_attack(cfg: Mapping[str, Any]) -> Attack:
    """{"method": name, **params} -> a configured Attack; unknown method, unknown/missing/invalid param -> ValueError."""
    params = dict(cfg)
    method = params.pop("method", None)
    if method not in ATTACKS:
        raise ValueError(f"unknown attack method {method!r}; known: {sorted(ATTACKS)}")
    cls = ATTACKS[method]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"attack {method!r}: unknown parameter(s) {unknown}; known: {sorted(fields)}")
    missing = sorted(n for n, f in fields.items() if n not in params
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"attack {method!r}: missing parameter(s) {missing}")
    return cls(**params)
