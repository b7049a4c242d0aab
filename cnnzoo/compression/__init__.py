"""Deep Compression (Han, Mao, Dally 2016) of zoo models into .cnnz files.

    prune.py     magnitude pruning with fixed masks
    kmeans.py    weight sharing by 1-D k-means, fine-tuning of the shared values
    pipeline.py  compress(...) end to end and its report (`cnnzoo compress` runs it)

The .cnnz file itself (Huffman-coded, docs/FORMAT.md) is ``cnnzoo.inference.cnnz``: reading a
compressed model needs none of this package.
"""
from cnnzoo.compression.pipeline import compress

__all__ = ["compress"]
