"""Deep Compression (Han, Mao, Dally 2016) of zoo models into .cnnz files.

    prune.py       magnitude pruning with fixed masks
    quantize.py    weight sharing by 1-D k-means, fine-tuning of the shared values
    huffman.py     canonical Huffman coding, vectorised
    fileformat.py  the .cnnz layout (docs/FORMAT.md): writing, bounds-checked reading, rebuilding
    pipeline.py    compress(...) end to end and its report (`cnnzoo compress` runs it)
"""
from cnnzoo.compress.pipeline import compress, load_compressed, load_compressed_checkpoint

__all__ = ["compress", "load_compressed", "load_compressed_checkpoint"]
