"""Parametric UMAP in torch: an MLP trained on umap-learn's fuzzy graph (SPEC 1, projection.py).

vrapi uses `umap.parametric_umap.ParametricUMAP`, which needs TensorFlow/Keras; this module replaces it
with the same method in torch, so the pipeline needs no TensorFlow. What is the same as umap-learn's
ParametricUMAP with its defaults:
- the graph: `umap.umap_.fuzzy_simplicial_set` with n_neighbors 15 (exact neighbours below 4,096 points,
  as UMAP does, NN-descent above), edges below max/n_epochs pruned, `find_ab_params(spread=1, min_dist=0.1)`;
- the encoder: 3 dense layers of 100 units with ReLU, then a linear layer to 2 outputs, Glorot-uniform
  weights and zero biases (Keras' Dense initialisation);
- the loss: UMAP's cross-entropy on positive edges plus negative_sample_rate (5) negatives per edge made
  by shuffling the batch's repeated tail embeddings, q = 1 / (1 + a d^(2b)) clipped to [1e-4, 1 - 1e-4]
  as in umap-learn 0.5.1, the version vrapi pins (0.5.12 rewrote this term with log-sigmoids);
- the optimiser: Adam (lr 1e-3, Keras' eps 1e-7), gradients clipped by value at 4; batches of
  min(N, 1000) edges; one pass over sum_e floor(n_epochs * w_e) edge samples (n_epochs: 500 up to
  10,000 points, else 200).

How it differs:
- edges are drawn i.i.d. with probability proportional to floor(n_epochs * w_e); umap-learn materialises
  that many copies of each edge and shuffles them (same expected frequencies, no memory for the copies);
- the random streams are torch's (a seeded `torch.Generator`), so embeddings are not those of the TF code,
  but the same seed gives bit-identical output on the same CPU build and thread count;
- `epochs` can be lowered to trade quality for time. Cost: a batch takes ~4 ms at D = 512 on one core
  and an epoch at N = 1,000 is ~7 batches, so the default 500 epochs take ~15-25 s and 30 epochs ~1-2 s.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.sparse import coo_matrix
from sklearn.metrics import pairwise_distances
from torch import nn
from tqdm.auto import tqdm

# UMAP switches from exact to approximate (NN-descent) neighbours at this size (umap_.UMAP.fit).
_EXACT_KNN_MAX = 4096


def fuzzy_graph(X: np.ndarray, n_neighbors: int, seed: int) -> coo_matrix:
    """UMAP's fuzzy simplicial set of X (N, D), as `UMAP.fit` builds it (exact kNN below 4,096 points)."""
    from umap.umap_ import fuzzy_simplicial_set, nearest_neighbors

    from advpipe.projections.numba_cache import enable_umap_cache

    enable_umap_cache()

    rng = np.random.RandomState(seed)
    if X.shape[0] < _EXACT_KNN_MAX:
        dmat = pairwise_distances(X, metric="euclidean")
        graph = fuzzy_simplicial_set(dmat, n_neighbors, rng, "precomputed")[0]
    else:
        # n_jobs=1: seeded NN-descent is only reproducible single-threaded (UMAP forces the same).
        knn_i, knn_d, _ = nearest_neighbors(X, n_neighbors, "euclidean", {}, False, rng, n_jobs=1)
        graph = fuzzy_simplicial_set(X, n_neighbors, rng, "euclidean", knn_indices=knn_i, knn_dists=knn_d)[0]
    return graph.tocoo()


def _encoder(n_in: int, hidden: tuple[int, ...], n_out: int, gen: torch.Generator) -> nn.Sequential:
    """ParametricUMAP's default encoder: Dense(100, relu) x 3, Dense(n_out); Keras (Glorot) init."""
    layers: list[nn.Module] = []
    sizes = (n_in, *hidden, n_out)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight, generator=gen)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def umap_cross_entropy(d2: torch.Tensor, positive: torch.Tensor, a: float, b: float,
                       eps: float = 1e-4) -> torch.Tensor:
    """Mean UMAP cross-entropy of squared embedding distances d2, q = 1/(1 + a d^(2b)), q clipped to [eps, 1-eps].

    With u = a d^(2b): -log q = softplus(log u) and -log(1 - q) = softplus(-log u); the clip (as
    tf.clip_by_value in umap-learn 0.5.1) caps both terms at -log(eps) and stops their gradient there.
    """
    log_u = math.log(a) + b * torch.log(d2.clamp_min(1e-12))
    cap = -math.log(eps)
    attract = nn.functional.softplus(log_u).clamp(max=cap)
    repel = nn.functional.softplus(-log_u).clamp(max=cap)
    return torch.where(positive, attract, repel).mean()


class ParametricUMAP:
    """UMAP embedding learnt by an MLP, so new points can be transformed (SPEC 1; replaces umap-learn's TF class)."""

    def __init__(self, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1, spread: float = 1.0,
                 epochs: int | None = None, batch_size: int | None = None, negative_sample_rate: int = 5,
                 learning_rate: float = 1e-3, clip_value: float = 4.0, hidden: tuple[int, ...] = (100, 100, 100),
                 random_state: int = 0, progress: bool = True) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.spread = spread
        self.epochs = epochs
        self.batch_size = batch_size
        self.negative_sample_rate = negative_sample_rate
        self.learning_rate = learning_rate
        self.clip_value = clip_value
        self.hidden = tuple(hidden)
        self.random_state = random_state
        self.progress = progress
        self.encoder: nn.Sequential | None = None

    def fit(self, X: np.ndarray) -> "ParametricUMAP":
        """Build the fuzzy graph of X (N, D) and train the encoder on its edges."""
        from umap.umap_ import find_ab_params

        X = np.ascontiguousarray(X, dtype=np.float32)
        n = X.shape[0]
        if n <= self.n_neighbors:
            raise ValueError(f"parametric UMAP needs more than n_neighbors={self.n_neighbors} points, got {n}")
        a, b = find_ab_params(self.spread, self.min_dist)
        n_epochs = self.epochs if self.epochs is not None else (500 if n <= 10_000 else 200)

        graph = fuzzy_graph(X, self.n_neighbors, self.random_state)
        graph.sum_duplicates()
        # umap-learn's get_graph_elements: drop edges too weak to be sampled once in n_epochs.
        keep = graph.data >= graph.data.max() / n_epochs
        counts = np.floor(n_epochs * graph.data[keep])
        keep_c = counts > 0
        head = torch.from_numpy(graph.row[keep][keep_c].astype(np.int64))
        tail = torch.from_numpy(graph.col[keep][keep_c].astype(np.int64))
        cdf = torch.from_numpy(np.cumsum(counts[keep_c]))
        batch = self.batch_size or min(n, 1000)
        steps = max(1, int(cdf[-1].item()) // batch)

        gen = torch.Generator().manual_seed(int(self.random_state))
        self.encoder = _encoder(X.shape[1], self.hidden, self.n_components, gen)
        # eps 1e-7: Keras' Adam default (torch's is 1e-8).
        opt = torch.optim.Adam(self.encoder.parameters(), lr=self.learning_rate, eps=1e-7)
        data = torch.from_numpy(X)
        rate = self.negative_sample_rate
        positive = torch.cat([torch.ones(batch, dtype=torch.bool), torch.zeros(batch * rate, dtype=torch.bool)])

        self.encoder.train()
        for _ in tqdm(range(steps), desc="parametric umap", unit="batch", mininterval=1.0,
                      disable=not self.progress):
            pick = torch.searchsorted(cdf, torch.rand(batch, generator=gen, dtype=torch.float64) * cdf[-1],
                                      right=True).clamp_max(len(cdf) - 1)
            # Encode each distinct point once: at small N a batch repeats points a lot.
            uniq, inv = torch.unique(torch.cat([head[pick], tail[pick]]), return_inverse=True)
            z = self.encoder(data[uniq])
            z_to, z_from = z[inv[:batch]], z[inv[batch:]]
            neg_to = z_to.repeat_interleave(rate, 0)
            neg_from = z_from.repeat_interleave(rate, 0)[torch.randperm(batch * rate, generator=gen)]
            d2 = torch.cat([((z_to - z_from) ** 2).sum(1), ((neg_to - neg_from) ** 2).sum(1)])
            loss = umap_cross_entropy(d2, positive, a, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_value_(self.encoder.parameters(), self.clip_value)
            opt.step()
        self.encoder.eval()
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Embed X (M, D) with the trained encoder; (M, n_components) float32."""
        if self.encoder is None:
            raise RuntimeError("ParametricUMAP.transform called before fit")
        with torch.no_grad():
            return self.encoder(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """fit(X), then transform(X)."""
        return self.fit(X).transform(X)
