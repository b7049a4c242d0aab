"""What every layer of cnnzoo may use, and which imports nothing else from cnnzoo.

    io.py           files written whole or not at all (atomic writes)
    distributed.py  torch.distributed: the world of processes, reductions, the device's name
    precision.py    the arithmetic a run computes in (bf16 autocast where the CPU or GPU has it)
"""
