"""Write IDX files (the MNIST format) for tests."""
import gzip
import struct
from pathlib import Path

import torch

_CODES = {torch.uint8: 0x08, torch.int32: 0x0C, torch.float32: 0x0D}


def write_idx(path: Path, t: torch.Tensor) -> None:
    header = bytes([0, 0, _CODES[t.dtype], t.dim()]) + struct.pack(f">{t.dim()}I", *t.shape)
    data = t.contiguous().numpy().astype(t.numpy().dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + data)
