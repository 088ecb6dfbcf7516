"""LESCI (SPEC 4, Simsso/NIPS-2018-Adversarial-Vision-Challenge): a kNN vote in a PCA-compressed embedding
space of one layer's activations, in front of the network's own output.

Build: the activations A (n x m) of the correctly classified training images at one layer, the top r principal
directions W (m x r), the embedding E = (A - mu) W (n x r; mu = 0 in the original, which does not centre) and
its labels. Inference at x: a = f_j(x), a_hat = (a - mu) W, cosine top-k rows of E, majority label l* (ties to
the lowest class) with vote fraction phi; phi >= t: "projected", else "identity-mapped" (the network's logits).
A projected sample outputs one-hot(l*) (the shipped models), or with `output: vq` the network continues from the
nearest top-k row of E of label l*, mapped back to the layer (E_i W^T + mu): the general vector-quantisation layer.

LESCI is a Classifier: every shared rule (represent, attack, ara, robustness) applies to it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from advpipe.models.base import Classifier
from advpipe.models.layers import find_layer

OUTPUTS = ("onehot", "vq")
# Above this many entries in A an exact SVD is replaced by torch's randomized low-rank PCA (pca_lowrank).
EXACT_SVD_MAX = 50_000_000


def fit_pca(a: torch.Tensor, r: int, center: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (m x r), mu (m,)): the top r principal directions of the rows of `a` (n x m), signs fixed so each
    column's largest entry is positive; mu = the row mean when `center`, else zeros (the original's choice).

    torch's SVD, not scikit-learn's PCA: it keeps the float32 tensors on the device, and sklearn has no
    uncentred PCA (TruncatedSVD is one, under another name); the tests check both against scikit-learn.
    """
    n, m = a.shape
    if not 1 <= r <= min(n, m):
        raise ValueError(f"r: {r} components of {n} activations of size {m}; expected 1 <= r <= {min(n, m)}")
    a = a.double()
    mu = a.mean(0) if center else torch.zeros(m, dtype=a.dtype, device=a.device)
    if n * m <= EXACT_SVD_MAX:
        _, _, vh = torch.linalg.svd(a - mu, full_matrices=False)
        w = vh[:r].T
    else:
        with torch.random.fork_rng(devices=[a.device] if a.device.type == "cuda" else []):
            torch.manual_seed(seed)
            _, _, w = torch.pca_lowrank(a - mu, q=min(r + 10, n, m), center=False, niter=4)
        w = w[:, :r]
    signs = torch.sign(w.gather(0, w.abs().argmax(0, keepdim=True)))
    return (w * signs).float(), mu.float()


def topk_cosine(query: torch.Tensor, bank: torch.Tensor, k: int, block: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, row indices) of the k rows of `bank` most cosine-similar to each query row, exact, by blocked
    matrix products over the bank (memory: queries x block). Ties keep the lower row index."""
    q = F.normalize(query, dim=1)
    best_s = torch.full((len(q), 0), float("-inf"), device=q.device)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
    for start in range(0, len(bank), block):
        s = q @ F.normalize(bank[start:start + block], dim=1).T
        i = torch.arange(start, start + s.shape[1], device=q.device).expand_as(s)
        s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
        # stable sort on -s: among equal similarities the earlier (lower) row stays first
        order = torch.sort(-s, dim=1, stable=True).indices[:, :k]
        best_s, best_i = s.gather(1, order), i.gather(1, order)
    return best_s, best_i


def vote(neighbour_labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(l*, phi): the majority label of each row of neighbour labels (B, k), ties to the lowest class (argmax
    returns the first maximum), and its vote fraction."""
    counts = F.one_hot(neighbour_labels, num_classes).sum(1)
    best = counts.argmax(1)
    return best, counts.gather(1, best[:, None])[:, 0].float() / neighbour_labels.shape[1]


@dataclass
class Decision:
    """Per sample: the kNN label, its vote fraction, whether it was projected, and the row of E chosen (vq)."""

    label: torch.Tensor
    fraction: torch.Tensor
    projected: torch.Tensor
    row: torch.Tensor


class LESCI(Classifier):
    """`base` with a LESCI vote at `layer` (W, mu, E, labels are buffers: they travel in the state_dict)."""

    def __init__(self, base: Classifier, layer: str, w: torch.Tensor, mu: torch.Tensor, e: torch.Tensor,
                 labels: torch.Tensor, num_classes: int, k: int = 10, t: float = 0.5, output: str = "onehot"):
        nn.Module.__init__(self)
        if output not in OUTPUTS:
            raise ValueError(f"output: {output!r}; expected one of {OUTPUTS}")
        if not 1 <= k <= len(e):
            raise ValueError(f"k: {k} neighbours of an embedding of {len(e)} rows; expected 1 <= k <= {len(e)}")
        self.base, self.layer, self.k, self.t, self.output, self.num_classes = base, layer, k, t, output, num_classes
        self.register_buffer("w", w)
        self.register_buffer("mu", mu)
        self.register_buffer("e", e)
        self.register_buffer("labels", labels.long())
        self.last: Decision | None = None
        find_layer(base, layer)  # a KeyError naming the accepted layers, now rather than at the first forward

    # The Classifier interface reads these from the base network.
    mean = property(lambda self: self.base.mean)
    std = property(lambda self: self.base.std)
    body = property(lambda self: self.base.body)
    head = property(lambda self: self.base.head)

    def decide(self, activation: torch.Tensor) -> Decision:
        """The LESCI decision for flattened activations (B, m)."""
        code = (activation - self.mu) @ self.w
        sims, rows = topk_cosine(code, self.e, self.k)
        label, fraction = vote(self.labels[rows], self.num_classes)
        # the nearest of the top-k rows that carry the winning label (vq output)
        first = (self.labels[rows] == label[:, None]).float().argmax(1)
        return Decision(label, fraction, fraction >= self.t, rows.gather(1, first[:, None])[:, 0])

    def _at_layer(self, _module, _inputs, output: torch.Tensor):
        decision = self.decide(output.flatten(1))
        self.last = decision
        if self.output == "vq":
            mapped = (self.e[decision.row] @ self.w.T + self.mu).view_as(output)
            mask = decision.projected.view(-1, *[1] * (output.dim() - 1))
            return torch.where(mask, mapped, output)
        return None

    def _through(self, forward, *args):
        """`forward(*args)` of the base with the vote hooked at the layer (only for this call: the base stays
        usable on its own), then the one-hot output for projected samples."""
        handle = find_layer(self.base, self.layer).register_forward_hook(self._at_layer)
        try:
            out = forward(*args)
        finally:
            handle.remove()
        logits, rest = (out, ()) if isinstance(out, torch.Tensor) else (out[0], out[1:])
        if self.output == "onehot":
            d = self.last
            logits = torch.where(d.projected[:, None], F.one_hot(d.label, logits.shape[1]).to(logits.dtype), logits)
        return logits if not rest else (logits, *rest)

    def forward_normalized(self, z: torch.Tensor) -> torch.Tensor:
        return self._through(self.base.forward_normalized, z)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._through(self.base.forward_features, x)

    def forward_with_decision(self, x: torch.Tensor) -> tuple[torch.Tensor, Decision]:
        """(logits, the LESCI decision) of one batch: the metrics read which samples were projected."""
        logits = self.forward(x)
        return logits, self.last


def wrap_lesci(base: Classifier, spec: Mapping[str, Any]) -> LESCI:
    """LESCI around `base` with zero buffers of the shapes a model.json's `defense.lesci` states (load_trained
    then fills them from model.pt)."""
    m, r, n = spec["m"], spec["r"], spec["n"]
    return LESCI(base, spec["layer"], torch.zeros(m, r), torch.zeros(m), torch.zeros(n, r),
                 torch.zeros(n, dtype=torch.long), spec["num_classes"], k=spec["k"], t=spec["t"],
                 output=spec.get("output", "onehot"))
