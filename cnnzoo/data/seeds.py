"""The seeds of a run's random draws, each a function of (seed, epoch[, step or image]) only.

Nothing depends on the draws before: a resume can start mid-epoch without replaying them, every
rank of a distributed run draws the same global batch, and the in-memory, streaming and shard
loaders shuffle an epoch alike.
"""
from __future__ import annotations


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s draws (its order of images or shards): apart for every (seed, epoch)
    of a run of fewer than 100003 epochs."""
    return seed * 100003 + epoch


def step_seed(seed: int, epoch: int, step: int) -> int:
    """The seed of the augmentation of ``step`` of ``epoch`` (a 63-bit value, as a generator takes)."""
    return (epoch_seed(seed, epoch) * 1000003 + step) % 2**63


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 62-bit seed from (seed, epoch, index) (SplitMix64's finaliser): neighbouring
    images get unrelated crops."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + 1) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) >> 2
