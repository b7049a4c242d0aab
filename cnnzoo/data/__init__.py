"""Images in: datasets held in memory, image folders streamed from disk, WebDataset shards, the
preprocessing a model's configuration asks for, and the seeds of every random draw.

    datasets.py    Fashion-MNIST, CIFAR, MNIST, synthetic and image folders as uint8 tensors; batch augmentation
    stream.py      image folders of any size, decoded per batch by DataLoader workers
    shards.py      WebDataset tar shards: written from an image folder, read back as a stream
    transforms.py  eval/train preprocessing built from a model's ``pretrained_cfg``
    seeds.py       per-epoch and per-step seeds, each a function of (seed, epoch[, step]) only
"""
