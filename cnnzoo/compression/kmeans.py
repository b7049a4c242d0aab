"""Trained quantization: weight sharing by 1-D k-means, then fine-tuning of the shared values.

Han et al. 2016, section 3: the surviving weights of a layer are clustered into 2^bits groups and
every weight is replaced by its group's centroid, so a weight is stored as a ``bits``-bit index
into a small codebook. The centroids are initialised linearly between the smallest and largest
weight (the paper's best choice: it keeps the few large weights, which matter most, as their own
clusters), or by density (equal quantiles of the weight CDF) or at random weights, as options.

Fine-tuning keeps the clustering: the gradient of a centroid is the sum of the gradients of the
weights that share it (the paper's Fig. 3), so after each step every weight still equals its
centroid, and pruned weights stay zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

INITS = ("linear", "density", "random")


def kmeans_1d(values: torch.Tensor, k: int, init: str = "linear", iters: int = 30,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster 1-D ``values`` into at most ``k`` groups; returns (centroids (k',), labels (n,)).

    Assignment is a ``searchsorted`` against the midpoints of the sorted centroids (O(n log k)),
    the update a ``bincount``: no loop over weights, so a 15M-weight VGG clusters in seconds.
    Empty clusters keep their old centroid. ``k'`` is ``min(k, n)``.
    """
    if init not in INITS:
        raise ValueError(f"k-means init must be one of {INITS}, got {init!r}")
    v = values.detach().double().flatten()
    n = v.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.long)
    k = max(1, min(k, n))
    if init == "linear":
        lo, hi = v.min(), v.max()
        c = torch.linspace(0.0, 1.0, k, dtype=torch.float64) * (hi - lo) + lo
    elif init == "density":
        c = torch.quantile(v if n <= 1 << 24 else v[torch.randperm(n, generator=generator)[: 1 << 24]],
                           (torch.arange(k, dtype=torch.float64) + 0.5) / k)
    else:
        c = v[torch.randperm(n, generator=generator)[:k]]
    c = torch.sort(c).values
    for _ in range(iters):
        labels = torch.searchsorted((c[1:] + c[:-1]) / 2, v)
        sums = torch.bincount(labels, weights=v, minlength=k)
        counts = torch.bincount(labels, minlength=k)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), c)
        new = torch.sort(new).values
        if torch.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = new
    labels = torch.searchsorted((c[1:] + c[:-1]) / 2, v)
    return c.float(), labels


@dataclass
class QuantizedWeight:
    """One layer's shared weights: ``weight.flatten()[positions] == centroids[labels]``, zero elsewhere."""

    name: str                  # state-dict key of the weight
    shape: tuple[int, ...]
    positions: torch.Tensor    # (n,) flat indices of the surviving weights, ascending
    labels: torch.Tensor       # (n,) cluster of each surviving weight
    centroids: torch.Tensor    # (k,) shared values, a leaf tensor the optimiser updates
    bits: int

    def dense(self) -> torch.Tensor:
        """The layer's weight tensor, rebuilt from the codebook."""
        w = torch.zeros(int(torch.tensor(self.shape).prod()), dtype=self.centroids.dtype)
        w[self.positions] = self.centroids.detach()[self.labels]
        return w.view(self.shape)

    def accumulate_grad(self, weight_grad: torch.Tensor) -> None:
        """Centroid gradient = sum of the gradients of the weights in its cluster (paper, Fig. 3)."""
        g = weight_grad.detach().flatten()[self.positions].to(self.centroids.dtype)
        self.centroids.grad = torch.zeros_like(self.centroids).index_add_(0, self.labels, g)


def quantize_weight(name: str, weight: torch.Tensor, mask: torch.Tensor, bits: int, init: str = "linear",
                    generator: torch.Generator | None = None) -> QuantizedWeight:
    """k-means-share the unmasked entries of ``weight`` into ``2 ** bits`` values."""
    if not 1 <= bits <= 16:
        raise ValueError(f"{name}: bits must be in 1..16, got {bits}")
    positions = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    values = weight.detach().flatten()[positions]
    centroids, labels = kmeans_1d(values, 1 << bits, init=init, generator=generator)
    return QuantizedWeight(name, tuple(weight.shape), positions, labels, centroids.clone().requires_grad_(True), bits)
