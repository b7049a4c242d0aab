"""Every command that opens a checkpoint with its dataset sees it as training prepared it: a run
trained on three classes, relabelled in the order given, scored, shown, calibrated and retrained."""
import argparse

import pytest
import torch
from PIL import Image

from cnnzoo.data.datasets import resize_to
from cnnzoo.inference.checkpoint_data import checkpoint_split
from cnnzoo.inference.evaluate import evaluate
from cnnzoo.inference.load import load_model
from cnnzoo.inference.predict import evaluate_checkpoint, predict_files, prepare_image
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import load_run_data, train

CLASSES = ["Sandal", "Bag", "9"]  # by name and by index, out of the dataset's order
NAMES = ["Sandal", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, fmnist_small):
    cfg = TrainConfig(model="lenet5", data_dir=str(fmnist_small), classes=CLASSES, epochs=1, train_subset=300,
                      batch_size=64, seed=3, out=str(tmp_path_factory.mktemp("classes-run")))
    train(cfg, progress=False)
    data = load_run_data(cfg, progress=False)  # what the training run saw
    model, meta = load_model(cfg.out)
    return cfg, data, model, meta


def same(a, b):
    return a.shape == b.shape and torch.equal(a, b)


def test_the_split_is_the_training_runs(run):
    cfg, data, model, meta = run
    assert meta["classes"] == NAMES == data.test_ds.classes
    test, normalize = checkpoint_split(model.pretrained_cfg, meta, "test")
    assert test.classes == NAMES and same(test.images, data.test_ds.images) and same(test.labels, data.test_ds.labels)
    assert same(normalize.scale, data.normalize.scale) and same(normalize.shift, data.normalize.shift)
    train_split, _ = checkpoint_split(model.pretrained_cfg, meta, "train", images=cfg.train_subset, seed=cfg.seed)
    assert same(train_split.images, data.train_ds.images) and same(train_split.labels, data.train_ds.labels)
    first, _ = checkpoint_split(model.pretrained_cfg, meta, "test", images=4, seed=None)
    assert same(first.images, data.test_ds.images[:4])
    with pytest.raises(ValueError, match="mnist has 10 classes, the checkpoint's model 3"):  # not its classes
        checkpoint_split(model.pretrained_cfg, meta, "test", dataset="mnist", data_dir=cfg.data_dir)


def test_eval_and_predict_see_the_runs_classes(run, tmp_path):
    cfg, data, model, meta = run
    res = evaluate_checkpoint(cfg.out)
    assert res["images"] == len(data.test_ds) < 1000
    assert res["top1"] == evaluate(model, data.test_ds, data.normalize)["top1"]
    img = tmp_path / "bag.png"
    bag = data.test_ds.images[(data.test_ds.labels == 1).nonzero()[0, 0]]  # at the model's 32x32
    Image.fromarray(bag[0, 2:-2, 2:-2].numpy()).save(img)  # as the dataset's 28x28 file
    assert same(prepare_image(img, model.pretrained_cfg, meta), bag)
    top = predict_files(cfg.out, [img], topk=5)[0]["top"]
    assert sorted(t["class"] for t in top) == sorted(NAMES)


def test_visualize_shows_the_runs_first_test_images(run, tmp_path):
    from cnnzoo.cli.visualize import _Job, load_images

    cfg, data, model, meta = run
    job = _Job(model, meta, argparse.Namespace(out=str(tmp_path), method="cam"))
    shown = load_images(job, [])
    assert [name for name, _ in shown] == [f"test{i}_{NAMES[y].replace(' ', '-')}"
                                           for i, y in enumerate(data.test_ds.labels[:4].tolist())]
    assert same(torch.stack([img for _, img in shown]), data.test_ds.images[:4])


def test_quantize_calibrates_on_the_runs_classes(run):
    from cnnzoo.inference.quantize import labelled_images

    cfg, data, model, meta = run
    images, labels = labelled_images("fashion-mnist", "test", 50, model.pretrained_cfg, data_dir=cfg.data_dir,
                                     data_size=meta["data_size"], classes=meta["classes"], seed=2)
    pick = data.test_ds.subset(50, seed=2)
    assert same(labels, pick.labels) and same(images, data.normalize(pick.images))


def test_compress_retrains_and_scores_on_the_runs_classes(run):
    from cnnzoo.compression.pipeline import _load_data

    cfg, data, model, meta = run
    train_ds, test_ds, normalize = _load_data(meta, model, None, None, cfg.train_subset, cfg.seed)
    assert train_ds.classes == test_ds.classes == NAMES
    assert same(train_ds.images, data.train_ds.images) and same(test_ds.images, data.test_ds.images)
    assert same(test_ds.labels, data.test_ds.labels) and same(normalize.scale, data.normalize.scale)


def test_the_explorer_offers_samples_of_the_runs_classes(run):
    from cnnzoo.explore import inference

    cfg, data, model, meta = run
    (ckpt,) = inference.load_checkpoints([cfg.out]).values()
    samples = inference.sample_images(ckpt)
    pick = data.test_ds.subset(12, seed=0)
    assert samples.classes == NAMES and same(samples.labels, pick.labels)
    assert tuple(samples.images.shape[1:]) == tuple(meta["data_size"])  # shown at the dataset's size
    assert same(resize_to(samples.images, (32, 32)), pick.images)  # and seen at the model's
