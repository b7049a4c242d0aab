"""Using a trained network: open any checkpoint, score it, predict, export it, quantize it to int8.

    load.py             any checkpoint: run folder, .safetensors, .onnx, .cnnz, or a registered name
    checkpoint_data.py  a checkpoint's dataset exactly as its training run prepared it
    evaluate.py         top-1, top-5 and loss on a dataset, with test-time augmentation
    predict.py          ``cnnzoo eval`` and ``cnnzoo predict``
    export.py           batch-norm folding, ``optimize_for_inference``, ``cnnzoo export``
    onnx.py             ONNX files with cnnzoo's metadata, ONNX Runtime and OpenVINO modules
    quantize.py         post-training static int8 (``cnnzoo quantize``)
    cnnz.py, huffman.py the .cnnz file of a Deep-Compressed model (docs/FORMAT.md): read and written here,
                        so that inference reads it without the compression pipeline

Nothing here imports ``cnnzoo.training``.
"""
