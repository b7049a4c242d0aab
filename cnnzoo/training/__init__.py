"""Training a network, read top to bottom.

    config.py      ``TrainConfig``: every setting, with its unit; what makes two runs the same experiment
    recipes/       named settings as TOML files (``--recipe NAME|FILE``, ``--config FILE``)
    loop.py        the loop: build the run -> epochs of steps -> evaluate -> checkpoint -> finish
    step.py        one training step, the only place a batch becomes a loss and a gradient
    optim.py       Muon
    finetune.py    starting from trained weights, and which layers train
    checkpoint.py  the run folder and its resumable train state
    loggers.py     --log: the run as it goes to TensorBoard and MLflow, resumed without a repeated step
    publish.py     a finished run to the Hugging Face Hub, with its model card (``cnnzoo push``)
"""
