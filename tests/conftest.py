import os

import pytest
import torch

from cnnzoo.data.datasets import FASHION_MNIST_DIR, FASHION_MNIST_INSTALL

# Two cores: keep each test process to them, and tests quiet and repeatable.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# The suite runs hundreds of commands in this one process: kept, each one's peak memory would stay
# with it (7 GB by the end). tests/cli/test_cli_args.py checks the setting in processes of its own.
os.environ.setdefault("CNNZOO_KEEP_FREED_MEMORY", "0")


@pytest.fixture(scope="session")
def fmnist_dir():
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST missing from {FASHION_MNIST_DIR}; `make test` installs it ({FASHION_MNIST_INSTALL})")
    return FASHION_MNIST_DIR


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory, fmnist_dir):
    """A small real Fashion-MNIST in IDX format (3000 train / 1000 test images), for fast runs."""
    from cnnzoo.data.datasets import load_dataset
    from tests.idx import write_idx

    out = tmp_path_factory.mktemp("fmnist-small")
    for split, prefix, n in (("train", "train", 3000), ("test", "t10k", 1000)):
        ds = load_dataset("fashion-mnist", split).subset(n, seed=1)
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", ds.images[:, 0])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", ds.labels.to(torch.uint8))
    return out


@pytest.fixture(scope="session")
def synthetic_lenet5_run(tmp_path_factory):
    """A run folder of LeNet-5 trained one epoch on the synthetic set (learnable: a class is a
    band's height); read-only, shared by the tests that compress or quantize a run."""
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.loop import train

    out = tmp_path_factory.mktemp("synthetic-lenet5-run")
    train(TrainConfig(model="lenet5", dataset="synthetic", epochs=1, batch_size=64, lr=3e-3, out=str(out),
                      train_subset=1024, channels_last=False), progress=False)
    return out
