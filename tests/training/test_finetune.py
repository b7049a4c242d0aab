"""Fine-tuning: class subsets, a new run from a checkpoint, linear probes, a slower backbone."""
import hashlib
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.cli import main
from cnnzoo.data.datasets import ImageDataset
from cnnzoo.models.weights import adapt_first_conv
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.finetune import read_initial_checkpoint
from cnnzoo.training.loop import build_model, build_optimizer, build_scheduler, load_run_data, resume_training, train
from cnnzoo.training.step import train_step
from cnnzoo.utils.distributed import World


def toy_dataset(per_class=(3, 5, 4)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ImageDataset(images, labels, ["cat", "dog", "7"][:len(per_class)], "toy")


def synthetic_cfg(out, **kw):
    # 16x16 synthetic images: a resnet20 (batch norms throughout) at a tenth of its usual cost
    base = dict(model="resnet20", dataset="synthetic", input_size=(1, 16, 16), epochs=1, batch_size=64, lr=0.01,
                warmup_epochs=0.0, out=str(out), seed=0, threads=1, test_subset=128)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module", autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()  # the runs here set one thread (the machine's cores are shared)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A resnet20 trained for an epoch on 10 synthetic classes (its batch norms hold real statistics)."""
    out = tmp_path_factory.mktemp("pre") / "run"
    train(synthetic_cfg(out, train_per_class=40), progress=False)
    return out


# --- class subsets ------------------------------------------------------------------------------------

def test_select_classes_relabels_in_the_order_given_and_keeps_names():
    ds = toy_dataset()
    sub = ds.select_classes(["7", "cat"])  # "7" is a class name here, not index 7
    assert sub.classes == ["7", "cat"]
    assert sub.labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert sub.images[:, 0, 0, 0].tolist() == [0, 1, 2, 8, 9, 10, 11]  # the dataset's order kept
    assert ds.select_classes([1, "2"]).classes == ["dog", "7"]


@pytest.mark.parametrize("wanted, message", [(["bird"], "no class 'bird' (classes: 0 'cat', 1 'dog', 2 '7')"),
                                              (["5"], "class index 5 out of range 0..2"),
                                              (["dog", "1"], "class 'dog' (index 1) given twice"),
                                              ([], "an empty list of classes")])
def test_select_classes_names_bad_classes(wanted, message):
    with pytest.raises(ValueError, match="toy: " + re.escape(message)):
        toy_dataset().select_classes(wanted)


def test_per_class_subset_is_stratified_and_seeded():
    ds = toy_dataset((30, 50, 40))
    a, b, c = ds.per_class_subset(10, seed=1), ds.per_class_subset(10, seed=1), ds.per_class_subset(10, seed=2)
    assert torch.bincount(a.labels).tolist() == [10, 10, 10]
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert (a.images[:, 0, 0, 0].diff() > 0).all()  # in the dataset's order
    with pytest.raises(ValueError, match="toy: class 'cat' has 30 images, 31 per class asked for"):
        ds.per_class_subset(31)


def test_run_data_filters_both_splits_by_index_or_name(fmnist_small):
    cfg = TrainConfig(data_dir=str(fmnist_small), classes=["5,8", "Ankle boot"], train_per_class=20, seed=3)
    data = load_run_data(cfg, progress=False)
    assert data.train_ds.classes == data.test_ds.classes == ["Sandal", "Bag", "Ankle boot"]
    assert torch.bincount(data.train_ds.labels).tolist() == [20, 20, 20]
    full_test = load_run_data(TrainConfig(data_dir=str(fmnist_small)), progress=False).test_ds
    wanted = torch.tensor([5, 8, 9])
    assert len(data.test_ds) == torch.isin(full_test.labels, wanted).sum()
    assert torch.equal(data.test_ds.images, full_test.images[torch.isin(full_test.labels, wanted)])
    assert torch.equal(wanted[data.test_ds.labels], full_test.labels[torch.isin(full_test.labels, wanted)])
    with pytest.raises(ValueError, match="no class 'Sandals'"):
        load_run_data(TrainConfig(data_dir=str(fmnist_small), classes=["Sandals"]), progress=False)


# --- a new run from a checkpoint ------------------------------------------------------------------

def built(cfg, initial=True):
    data = load_run_data(cfg, progress=False)
    init = read_initial_checkpoint(cfg.initial_checkpoint, cfg.model) if initial else None
    if init is not None:
        data = init.fit_normalization(data)
    torch.manual_seed(cfg.seed)
    return build_model(cfg, data, World(), torch.device("cpu"), init)[0], data


def test_initial_checkpoint_loads_the_backbone_and_a_fresh_head(pretrained_run, tmp_path):
    before = load_file(pretrained_run / "best.safetensors")
    cfg = synthetic_cfg(tmp_path / "ft", classes=["1", "3", "5"], train_per_class=10,
                        initial_checkpoint=str(pretrained_run))
    net, data = built(cfg)
    scratch, _ = built(cfg, initial=False)
    state = net.state_dict()
    for k, v in state.items():
        if k.startswith("fc."):  # other classes: the head is the fresh one a run from scratch gets
            assert torch.equal(v, scratch.state_dict()[k]), k
        else:
            assert torch.equal(v, before[k]), k
    config = json.loads((pretrained_run / "config.json").read_text())
    assert (data.mean, data.std) == (tuple(config["mean"]), tuple(config["std"]))

    summary = train(cfg, progress=False)
    record = json.loads((tmp_path / "ft" / "config.json").read_text())["initial_weights"]
    assert record["file"] == str((pretrained_run / "best.safetensors").resolve())
    assert record["sha256"] == hashlib.sha256((pretrained_run / "best.safetensors").read_bytes()).hexdigest()
    assert summary["epochs"] == 1 and summary["train_images"] == 30  # a new run: its own epoch 1
    state = torch.load(tmp_path / "ft" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1 and [g["lr"] for g in state["optimizer"]["param_groups"]][0] == pytest.approx(0.0)


def test_same_classes_keep_the_head_and_channels_are_adapted(pretrained_run, tmp_path):
    before = load_file(pretrained_run / "best.safetensors")
    same, _ = built(synthetic_cfg(tmp_path / "a", initial_checkpoint=str(pretrained_run)))
    assert torch.equal(same.state_dict()["fc.weight"], before["fc.weight"])
    # as many classes, but others (here: in another order): the old head would be wrong, not just untrained
    with pytest.warns(UserWarning, match="the classifier 'fc' is left freshly initialised"):
        reordered, _ = built(synthetic_cfg(tmp_path / "r", initial_checkpoint=str(pretrained_run),
                                           classes=[str(i) for i in range(9, -1, -1)]))
    fresh, _ = built(synthetic_cfg(tmp_path / "r"), initial=False)
    assert torch.equal(reordered.state_dict()["fc.weight"], fresh.state_dict()["fc.weight"])
    assert torch.equal(reordered.state_dict()["conv1.weight"], before["conv1.weight"])
    rgb, data = built(synthetic_cfg(tmp_path / "b", initial_checkpoint=str(pretrained_run), input_size=(3, 16, 16)))
    assert torch.equal(rgb.state_dict()["conv1.weight"], adapt_first_conv(before["conv1.weight"], 3))
    assert len(data.mean) == 3  # the checkpoint's statistics are for one channel: the data's own


def test_initial_checkpoint_of_another_architecture_is_refused(pretrained_run, tmp_path):
    with pytest.raises(ValueError, match=r"holds a resnet20, but --model is resnet32; leave out --model"):
        train(synthetic_cfg(tmp_path / "x", model="resnet32", initial_checkpoint=str(pretrained_run)), progress=False)
    with pytest.raises(FileNotFoundError, match="--initial-checkpoint: .*nowhere"):
        train(synthetic_cfg(tmp_path / "y", initial_checkpoint=str(tmp_path / "nowhere")), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_takes_the_model_from_the_checkpoint(pretrained_run, tmp_path):
    out = tmp_path / "cli"
    assert main(["train", "--initial-checkpoint", str(pretrained_run), "--dataset", "synthetic", "--classes", "0,1",
                 "--train-per-class", "8", "--epochs", "1", "--test-subset", "64", "--threads", "1",
                 "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "resnet20" and config["classes"] == ["class0", "class1"]


# --- which layers train, and how fast ---------------------------------------------------------------

def test_linear_probe_changes_nothing_but_the_head(pretrained_run, tmp_path):
    cfg = synthetic_cfg(tmp_path / "probe", initial_checkpoint=str(pretrained_run), freeze_backbone=True,
                        classes=["2", "4", "6", "8"], train_per_class=32, epochs=2, batch_size=32)
    net, _ = built(cfg)
    opt = build_optimizer(net, cfg)
    head = {id(p) for p in net.fc.parameters()}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == head
    assert all(p.requires_grad == (id(p) in head) for p in net.parameters())

    train(cfg, progress=False)
    start, after = load_file(pretrained_run / "best.safetensors"), load_file(tmp_path / "probe" / "last.safetensors")
    backbone = [k for k in after if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for k in backbone:  # weights and batch-norm buffers alike
        assert torch.equal(after[k], start[k]), k
    assert not torch.equal(after["fc.weight"], net.fc.weight.detach())  # the head did train


def test_linear_probe_resumes_to_the_same_weights(pretrained_run, tmp_path):
    kw = dict(initial_checkpoint=str(pretrained_run), freeze_backbone=True, classes=["2", "4"], train_per_class=32,
              batch_size=16, sched="none")  # a constant rate: stopping at epoch 1 of 2 changes no schedule
    train(synthetic_cfg(tmp_path / "full", epochs=2, **kw), progress=False)
    train(synthetic_cfg(tmp_path / "cut", epochs=1, **kw), progress=False)
    resume_training(tmp_path / "cut", epochs=2, progress=False)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_backbone_lr_scale_sets_the_step_of_each_group(pretrained_run, tmp_path):
    cfg = synthetic_cfg(tmp_path / "s", initial_checkpoint=str(pretrained_run), backbone_lr_scale=0.1, lr=0.01,
                        weight_decay=0.05, sched="cosine", warmup_epochs=0.0, epochs=4)
    net, data = built(cfg)
    opt = build_optimizer(net, cfg)
    head = {id(p) for p in net.fc.parameters()}
    groups = [(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in opt.param_groups]
    assert sorted(i for *_, ids in groups for i in ids) == sorted(id(p) for p in net.parameters())
    for lr, wd, ids in groups:
        params = [p for p in net.parameters() if id(p) in ids]
        assert lr == pytest.approx(0.01 if ids <= head else 0.001) and (ids <= head or not ids & head)
        assert all((p.ndim > 1) == (wd == 0.05) for p in params)  # no decay on biases and norms

    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    for _ in range(15):
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert 0 < lrs[0] < 0.001 and all(lr == pytest.approx(0.1 * lrs[-1]) for lr in lrs[:2])  # both scheduled

    # The effective step: Adam's first update moves each weight by about lr (its gradient's sign).
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = data.normalize(data.train_ds.images[:64]), data.train_ds.labels[:64]
    train_step(net.train(), x, y, torch.nn.functional.cross_entropy, opt)
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in net.named_parameters()}
    assert step["fc.weight"] == pytest.approx(lrs[-1], rel=0.05)
    assert step["layer1.0.conv1.weight"] == pytest.approx(0.1 * lrs[-1], rel=0.05)


def test_inconsistent_fine_tuning_settings_are_refused(tmp_path):
    net, _ = built(synthetic_cfg(tmp_path), initial=False)
    with pytest.raises(ValueError, match="--backbone-lr-scale must be >= 0, got -1"):
        build_optimizer(net, synthetic_cfg(tmp_path, backbone_lr_scale=-1.0))
    with pytest.raises(ValueError, match="no effect with --freeze-backbone"):
        build_optimizer(net, synthetic_cfg(tmp_path, backbone_lr_scale=0.1, freeze_backbone=True))
    with pytest.raises(ValueError, match="--initial-checkpoint brings its own weights"):
        train(synthetic_cfg(tmp_path / "x", initial_checkpoint=str(tmp_path), pretrained=True), progress=False)


def test_eval_scores_a_run_on_its_own_classes(fmnist_small, tmp_path):
    from cnnzoo.inference.predict import evaluate_checkpoint

    cfg = TrainConfig(model="lenet5", data_dir=str(fmnist_small), classes=["Bag", "Trouser"], epochs=1, threads=1,
                      out=str(tmp_path / "run"))
    summary = train(cfg, progress=False)
    res = evaluate_checkpoint(tmp_path / "run")
    assert res["images"] == summary["test_images"] < 1000 and res["top1"] == pytest.approx(summary["best_test_top1"])
