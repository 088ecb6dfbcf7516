"""The Attack interface (DESIGN "The three interfaces"): configured once, run on (classifier, x, y) in batches."""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class AttackResult:
    """Per-sample attack output (DESIGN): x_adv (N, C, H, W) in [0,1]; success (N,) = model(x_adv).argmax != y,
    or None when the caller asked not to check (it runs its own forward pass on x_adv)."""

    x_adv: Tensor
    success: Tensor | None

    @staticmethod
    def cat(results: list[AttackResult]) -> AttackResult:
        """Concatenate batch results along the sample axis."""
        success = None if results[0].success is None else torch.cat([r.success for r in results])
        return AttackResult(torch.cat([r.x_adv for r in results]), success)


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


class Attack(ABC):
    """An attack configured once from keyword arguments; bounds are always [0,1] (pixel space).

    Subclasses are dataclasses (their fields are the accepted parameters) and implement `perturb`.
    """

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None) -> Tensor:
        """x: (B, ...) in [0,1], y: (B,) labels -> x_adv (B, ...) in [0,1], detached, on x's device."""

    def make_generator(self, device: torch.device) -> torch.Generator | None:
        """A fresh RNG seeded from the config for attacks that draw random numbers, else None."""
        return None

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor,
                 generator: torch.Generator | None = None, check_success: bool = True) -> AttackResult:
        """Attack one batch; success is re-evaluated on the returned x_adv so it always matches its prediction."""
        check_inputs(model, x, y)
        if generator is None:
            generator = self.make_generator(x.device)
        with torch.enable_grad():  # callers may sit under no_grad; we only differentiate w.r.t. the input
            x_adv = self.perturb(model, x, y, generator)
        if not check_success:
            return AttackResult(x_adv, None)
        with torch.no_grad():
            success = model(x_adv).argmax(1) != y
        return AttackResult(x_adv, success)

    def run(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, progress: bool = True,
            desc: str | None = None, check_success: bool = True) -> AttackResult:
        """Attack x in batches of batch_size with a progress bar; one RNG runs through all batches in order."""
        check_int("batch_size", batch_size, 1)
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        generator = self.make_generator(x.device)
        results = []
        with tqdm(total=len(x), desc=desc or type(self).__name__, unit="img", disable=not progress) as bar:
            for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
                results.append(self(model, xb, yb, generator, check_success))
                bar.update(len(xb))
        if not results:  # empty input: keep shapes and dtypes
            return AttackResult(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device))
        return AttackResult.cat(results)


def check_inputs(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """Eval mode (BN/dropout would otherwise change under attack), x in [0,1], one integer label per sample."""
    if any(m.training for m in model.modules()):
        raise ValueError("model is in training mode; call model.eval() before attacking")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor in [0,1], got dtype {x.dtype}")
    if y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("x must lie in [0,1] (attacks work in pixel space; normalisation is inside the model)")


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
