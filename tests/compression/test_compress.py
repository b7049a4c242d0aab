"""Deep Compression: Huffman coding, k-means sharing, masked and tied fine-tuning, the .cnnz file
(exact round trip, and clean errors on every kind of damaged or hostile file), the pipeline."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch

from cnnzoo.cli import build_parser
from cnnzoo.cli.common import run_command
from cnnzoo.compression.kmeans import kmeans_1d, quantize_weight
from cnnzoo.compression.pipeline import (
    MODEL_DEFAULTS,
    SCHEDULE_DEFAULTS,
    _spec_with_defaults,
    compress,
    finetune,
    teacher_logits,
)
from cnnzoo.compression.prune import apply_masks, check_spec_keys, magnitude_mask, parse_layer_spec, prunable_weights
from cnnzoo.data.datasets import Normalize, synthetic_dataset
from cnnzoo.inference import cnnz, huffman
from cnnzoo.inference.cnnz import load_compressed, load_compressed_checkpoint
from cnnzoo.models.factory import create_model
from tests.helpers import compress_cut_in_third_retraining

# --------------------------------------------------------------------------------------------------
# Huffman


@pytest.mark.parametrize("dist", ["geometric", "uniform", "single", "two"])
def test_huffman_round_trip(dist):
    rng = np.random.default_rng(0)
    n = 5000
    sym = {"geometric": rng.geometric(0.2, n) - 1, "uniform": rng.integers(0, 300, n),
           "single": np.full(n, 7), "two": rng.integers(0, 2, n)}[dist]
    counts = np.bincount(sym)
    lengths = huffman.code_lengths(counts)
    data, nbits = huffman.encode(sym, lengths)
    assert nbits == huffman.coded_bits(counts, lengths)
    np.testing.assert_array_equal(huffman.decode(data, nbits, lengths, n), sym)
    # a Huffman code is within 1 bit per symbol of the entropy
    p = counts[counts > 0] / n
    assert nbits / n <= max(1.0, -(p * np.log2(p)).sum() + 1)


def test_huffman_lengths_are_limited_and_canonical_codes_prefix_free():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(np.array(fib))
    assert lengths.max() <= huffman.MAX_CODE_LEN and (lengths > 0).all()
    huffman.check_lengths(lengths)
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_huffman_decode_rejects_corrupt_streams():
    sym = np.array([0, 1, 2, 2, 2, 2, 3, 0])
    lengths = huffman.code_lengths(np.bincount(sym))
    data, nbits = huffman.encode(sym, lengths)
    with pytest.raises(ValueError):
        huffman.decode(data, nbits - 1, lengths, len(sym))          # truncated
    with pytest.raises(ValueError):
        huffman.decode(data, nbits, lengths, len(sym) - 1)          # bits left over
    with pytest.raises(ValueError):
        huffman.decode(data, nbits + 64, lengths, len(sym))         # more bits than bytes
    with pytest.raises(ValueError, match="prefix code"):
        huffman.decode(data, nbits, np.array([1, 1, 1, 1]), len(sym))  # Kraft sum > 1
    incomplete = np.array([2, 0, 0, 0])                             # only codeword "00"
    with pytest.raises(ValueError, match="corrupt"):
        huffman.decode(b"\xff", 2, incomplete, 1)


# --------------------------------------------------------------------------------------------------
# k-means and the sparse streams


def test_kmeans_linear_init_clusters_to_nearest_centroid():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(500, generator=g) * 0.01 + c for c in (-1.0, 0.0, 2.0)])
    for init in ("linear", "density", "random"):
        c, labels = kmeans_1d(v, 3, init=init, generator=g)
        assert torch.all(c[1:] >= c[:-1])
        if init != "random":
            torch.testing.assert_close(c, torch.tensor([-1.0, 0.0, 2.0]), atol=0.01, rtol=0)
        nearest = (v[:, None] - c[None, :].double()).abs().argmin(1)
        assert torch.equal(labels, nearest)
    c, labels = kmeans_1d(torch.tensor([0.5, -0.5]), 16)  # fewer weights than clusters
    assert len(c) == 2 and sorted(c.tolist()) == [-0.5, 0.5]


def test_entry_streams_insert_fillers_where_a_gap_overflows():
    positions = np.array([0, 3, 40, 41, 200])
    labels = np.array([0, 1, 2, 0, 1])
    idx, gaps = cnnz.entry_streams(positions, labels, gap_bits=3)  # gaps 0,2,36,0,158 with span 8
    assert (gaps < 8).all()
    assert (idx == 0).sum() == 36 // 8 + 158 // 8                 # fillers carry the zero symbol
    rebuilt = np.cumsum(gaps + 1) - 1
    np.testing.assert_array_equal(rebuilt[idx > 0], positions)
    np.testing.assert_array_equal(idx[idx > 0] - 1, labels)


# --------------------------------------------------------------------------------------------------
# Pruning and quantized fine-tuning keep their constraints


def _tiny_data(n=128):
    ds = synthetic_dataset(n, (1, 32, 32), 10, seed=0)
    return ds, Normalize((0.3,), (0.3,))


@pytest.mark.parametrize("name", sorted(MODEL_DEFAULTS))
def test_tuned_defaults_name_real_layers(name):
    # every tuned default must reach a layer of its model (a renamed layer would silently leave the
    # default sparsity in place) and every schedule key must be one the pipeline reads
    with torch.device("meta"):
        weights = prunable_weights(create_model(name, num_classes=10))
    for key in ("sparsity", "bits"):
        check_spec_keys(MODEL_DEFAULTS[name][key], list(weights), f"{name} default {key}")
    sparsity, bits = _spec_with_defaults(name, weights, None, None, None)
    assert sparsity == MODEL_DEFAULTS[name]["sparsity"] and set(bits) == {n[: -len(".weight")] for n in weights}
    assert set(MODEL_DEFAULTS[name].get("schedule", {})) <= set(SCHEDULE_DEFAULTS)


def test_layer_spec_parsing_and_errors():
    assert parse_layer_spec("c5=0.9, fc=0.5", "--sparsity") == {"c5": 0.9, "fc": 0.5}
    with pytest.raises(ValueError, match="LAYER=VALUE"):
        parse_layer_spec("c5", "--sparsity")
    with pytest.raises(ValueError, match="not a number"):
        parse_layer_spec("c5=lots", "--sparsity")


def test_pruned_weights_stay_exactly_zero_through_retraining():
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1)
    weights = prunable_weights(model)
    masks = {n: magnitude_mask(w, sparsity=0.8) for n, w in weights.items()}
    q_masks = {n: magnitude_mask(w, quality=1.0) for n, w in weights.items()}
    for n, w in weights.items():
        assert abs(1 - masks[n].float().mean().item() - 0.8) < 0.01
        assert torch.equal(q_masks[n], w.detach().abs() >= w.detach().std())
    apply_masks(model, masks)
    before = {n: w.detach().clone() for n, w in weights.items()}
    ds, norm = _tiny_data()
    finetune(model, ds, norm, epochs=1, lr=1e-2, batch_size=64, masks=masks, weight_decay=0.05, channels_last=True)
    for n, w in weights.items():
        assert torch.all(w.detach()[~masks[n]] == 0), n
        assert not torch.equal(w.detach()[masks[n]], before[n][masks[n]]), f"{n} did not train"
        assert w.is_contiguous(), f"{n}: retraining ran channels-last and must hand the model back as it came"


def test_retraining_weight_decay_shrinks_weights_not_biases():
    # with a zero learning signal (lr so small that Adam's steps are nil next to the decay), the
    # decoupled weight decay alone shrinks conv/linear weights by lr * wd per step; biases keep theirs
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds, norm = _tiny_data(64)
    finetune(model, ds, norm, epochs=1, lr=1e-12, batch_size=64, weight_decay=1e9)
    for n, p in model.named_parameters():
        if p.ndim > 1:
            assert torch.allclose(p.detach(), before[n] * (1 - 1e-12 * 1e9), rtol=1e-5), n  # one step at lr
        else:
            assert torch.allclose(p.detach(), before[n], atol=1e-9), n


def test_distillation_pulls_the_student_towards_the_teacher():
    # labels all 0 (so cross-entropy alone would teach one class), a teacher that spreads its mass:
    # with the teacher, the student's outputs move towards the teacher's; without, they do not.
    ds, norm = _tiny_data()
    ds.labels.zero_()
    torch.manual_seed(1)
    teacher = create_model("lenet5", num_classes=10, in_chans=1).eval()
    x = norm(ds.images)

    def kl(student):
        with torch.no_grad():
            return torch.nn.functional.kl_div(student.eval()(x).log_softmax(1), teacher(x).log_softmax(1),
                                              reduction="batchmean", log_target=True).item()

    results, students = {}, {}
    logits = teacher_logits(teacher, ds, norm)
    for use_teacher in ("none", "model", "logits"):
        torch.manual_seed(0)
        student = students[use_teacher] = create_model("lenet5", num_classes=10, in_chans=1)
        finetune(student, ds, norm, epochs=4, lr=3e-3, batch_size=32,
                 teacher=dict(none=None, model=teacher, logits=logits)[use_teacher])
        results[use_teacher] = kl(student)
    assert results["model"] < 0.5 * results["none"], results
    # the teacher's logits computed once teach what its forward pass at every step teaches
    for (n, a), b in zip(students["model"].named_parameters(), students["logits"].parameters()):
        assert torch.allclose(a, b, atol=1e-5), n
    with pytest.raises(ValueError, match="unaugmented"):
        finetune(students["logits"], ds, norm, epochs=1, lr=1e-3, teacher=logits, flip=True)


def test_finetune_augments_like_the_trainer(monkeypatch):
    # every retraining batch goes through the trainer's crop and flip when asked, and through
    # neither by default
    import cnnzoo.data.datasets as data

    seen = {"crop": 0, "flip": 0}
    crop, flip = data.random_crop, data.random_flip

    def counting_crop(x, padding, generator):
        seen["crop"] += padding == 2
        return crop(x, padding, generator)

    def counting_flip(x, generator):
        seen["flip"] += 1
        return flip(x, generator)

    monkeypatch.setattr(data, "random_crop", counting_crop)
    monkeypatch.setattr(data, "random_flip", counting_flip)
    ds, norm = _tiny_data()
    model = create_model("lenet5", num_classes=10, in_chans=1)
    finetune(model, ds, norm, epochs=1, lr=1e-3, batch_size=32)
    assert seen == {"crop": 0, "flip": 0}
    finetune(model, ds, norm, epochs=1, lr=1e-3, batch_size=32, crop_padding=2, flip=True)
    batches = -(-len(ds) // 32)
    assert seen == {"crop": batches, "flip": batches}


def test_quantized_finetune_sums_gradients_and_keeps_weights_tied():
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1)
    weights = prunable_weights(model)
    masks = {n: magnitude_mask(w, sparsity=0.5) for n, w in weights.items()}
    quant = {n: quantize_weight(n, w, masks[n], bits=3) for n, w in weights.items()}
    # centroid gradient = sum of the gradients of its weights
    q = quant["c3.weight"]
    grad = torch.randn(q.shape)
    q.accumulate_grad(grad)
    flat = grad.flatten()[q.positions]
    for c in range(len(q.centroids)):
        torch.testing.assert_close(q.centroids.grad[c], flat[q.labels == c].sum())
    with torch.no_grad():
        for n, qw in quant.items():
            weights[n].copy_(qw.dense())
    start = {n: qw.centroids.detach().clone() for n, qw in quant.items()}
    ds, norm = _tiny_data()
    finetune(model, ds, norm, epochs=1, lr=1e-3, batch_size=64, quantized=quant, centroid_lr=1e-3, channels_last=True)
    for n, qw in quant.items():
        w = weights[n].detach().flatten()
        assert torch.equal(w[qw.positions], qw.centroids.detach()[qw.labels]), n  # tied to its cluster
        rest = torch.ones_like(w, dtype=torch.bool)
        rest[qw.positions] = False
        assert torch.all(w[rest] == 0) and len(torch.unique(w)) <= 2 ** 3 + 1
        assert not torch.equal(qw.centroids.detach(), start[n]), f"{n}: centroids did not train"


# --------------------------------------------------------------------------------------------------
# The .cnnz file


def _tiny_file(sparsity=0.97, bits=3, dense_dtype="fp16"):
    """A compressed random LeNet-5: (bytes, model in memory)."""
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1).eval()
    weights = prunable_weights(model)
    quant = {n: quantize_weight(n, w, magnitude_mask(w, sparsity=sparsity), bits) for n, w in weights.items()}
    cb = 1 if dense_dtype == "fp16" else 0
    dense, enc = {}, {}
    with torch.no_grad():
        for n, q in quant.items():
            q.centroids = cnnz.round_codebook(q.centroids, cb)
            weights[n].copy_(q.dense())
        for n, t in model.state_dict().items():
            if n not in quant:
                enc[n] = cnnz.dense_encoding(t, dense_dtype)
                t.copy_(cnnz.round_to_encoding(t, enc[n]))
                dense[n] = t
    meta = dict(model="lenet5", num_classes=10, in_chans=1, kwargs={}, input_size=[1, 32, 32], mean=[0.5], std=[0.5],
                classes=[f"c{i}" for i in range(10)], dataset="synthetic", data_size=[1, 32, 32])
    blob, stats = cnnz.encode_file(meta, dense, enc, quant, cb)
    return blob, model


@pytest.mark.parametrize("dense_dtype", ["fp16", "fp32"])
def test_file_round_trip_gives_identical_logits(tmp_path, dense_dtype):
    blob, model = _tiny_file(sparsity=0.6, bits=5, dense_dtype=dense_dtype)
    path = tmp_path / "m.cnnz"
    cnnz.write_cnnz(path, blob)
    rebuilt, meta = load_compressed_checkpoint(path)
    assert meta["classes"][3] == "c3" and meta["dataset"] == "synthetic"
    for (n, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), n
    x = torch.randn(16, 1, 32, 32)
    assert torch.equal(model(x), rebuilt(x))
    assert not rebuilt.training


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_random_mutations_raise_value_error(tmp_path):
    blob, _ = _tiny_file()
    assert len(blob) < 4000
    rng = np.random.default_rng(0)
    path = tmp_path / "bad.cnnz"
    for i in range(600):
        data = bytearray(blob)
        off = int(rng.integers(0, len(data)))
        data[off] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError):
            load_compressed(path)
    for cut in list(range(0, len(blob), 97)) + [len(blob) - 1]:
        with pytest.raises(ValueError):
            cnnz.decode_file(blob[:cut])


def test_parser_checks_hold_behind_the_checksums():
    """With CRCs off, damaged bytes reach the parser: it must still raise only ValueError."""
    blob, _ = _tiny_file()
    rng = np.random.default_rng(1)
    failures = 0
    for i in range(400):
        data = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            off = int(rng.integers(0, len(data) - 4))
            data[off] ^= int(rng.integers(1, 256))
        try:
            meta, tensors = cnnz.decode_file(bytes(data), check_crc=False)
            cnnz.build_model(meta, tensors, "mutated")
        except ValueError:
            failures += 1
    assert failures > 200  # most damage is caught by structure alone


def _hostile(blob: bytes, meta_patch=None, shape=None) -> bytes:
    """Re-assemble ``blob`` with its metadata patched or its first record's shape replaced, CRCs fixed."""
    (meta_len,) = struct.unpack("<I", blob[8:12])
    meta = json.loads(blob[12:12 + meta_len])
    if meta_patch:
        meta.update(meta_patch)
    raw = json.dumps(meta).encode()
    rest = blob[12 + meta_len:-4]
    if shape is not None:
        n_rec = rest[:4]
        (plen,) = struct.unpack("<I", rest[4:8])
        payload = rest[8:8 + plen]
        nl = payload[0]
        enc, ndim = payload[1 + nl], payload[2 + nl]
        head = payload[:1 + nl] + bytes([enc, len(shape)]) + struct.pack(f"<{len(shape)}I", *shape)
        payload = head + payload[3 + nl + 4 * ndim:]
        rest = n_rec + struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload)) + rest[12 + plen:]
    return _with_crc(blob[:8] + struct.pack("<I", len(raw)) + raw + rest)


def test_hostile_headers_give_clear_errors(tmp_path):
    blob, _ = _tiny_file()
    cases = {
        "version": (blob[:4] + struct.pack("<HH", 9, 0) + blob[8:], "version 9"),
        "magic": (b"PK\x03\x04" + blob[4:], "not a .cnnz"),
        "crc": (blob[:-1] + bytes([blob[-1] ^ 1]), "CRC"),
        "huge shape": (_hostile(blob, shape=(1 << 16, 1 << 16, 1 << 16)), "cap"),
        "wrong shape": (_hostile(blob, shape=(3,)), "truncated|shape|unexpected"),
        "huge classes": (_hostile(blob, {"num_classes": 10 ** 9}), "num_classes"),
        "unknown model": (_hostile(blob, {"model": "resnet9000"}), "unknown model"),
        "bad kwargs": (_hostile(blob, {"kwargs": {"act": "sigmoid"}}), "act"),
        "other model": (_hostile(blob, {"model": "lenet5_caffe"}), "do not match|shape"),
    }
    for name, (data, pattern) in cases.items():
        path = tmp_path / f"{name}.cnnz"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=pattern):
            load_compressed(path)
    with pytest.raises(FileNotFoundError):
        load_compressed(tmp_path / "missing.cnnz")


# --------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_compress_pipeline_end_to_end(synthetic_lenet5_run, tmp_path, capsys):
    out = tmp_path / "m.cnnz"
    args = build_parser().parse_args(["compress", "--checkpoint", str(synthetic_lenet5_run), "--out", str(out), "--sparsity",
                              "c5=0.9,f6=0.9,conv=0.5", "--bits", "conv=4,fc=3", "--prune-iters", "2",
                              "--prune-epochs", "0.25", "--final-epochs", "0.25", "--quant-epochs", "0.25", "--train-subset", "512", "--json"])
    assert run_command(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    t = report["totals"]
    assert t["file_bytes"] == out.stat().st_size and report["roundtrip_exact"]
    assert t["ratio"] == pytest.approx(t["fp32_bytes"] / t["file_bytes"], rel=1e-3) and t["ratio"] > 10
    by_layer = {row["layer"]: row for row in report["layers"]}
    assert by_layer["c5"]["kept_pct"] == pytest.approx(10.0, abs=0.1) and by_layer["c5"]["bits"] == 4
    assert by_layer["f6"]["bits"] == 3 and by_layer["c1"]["kept_pct"] == pytest.approx(50.0, abs=1)
    assert (tmp_path / "m.report.md").read_text().count("|") > 50
    # LeNet-5's tuned schedule applies where no flag overrides it
    assert report["settings"]["lr"] == 3e-3 and report["settings"]["distill"] is True
    assert report["settings"]["quant_epochs"] == 0.25 and report["settings"]["crop_padding"] == 0
    model = load_compressed(out)
    w = model.c5.weight.detach()
    assert (w != 0).float().mean().item() <= 0.1 + 1e-3 and len(torch.unique(w)) <= 2 ** 4 + 1
    with pytest.raises(ValueError, match="no prunable layer named 'c9'"):
        compress(synthetic_lenet5_run, tmp_path / "x.cnnz", sparsity="c9=0.5")


def test_compress_config_fills_only_what_was_not_given_from_the_model_defaults():
    from cnnzoo.compression.pipeline import CompressConfig

    cfg = CompressConfig(quant_epochs=0.5).for_model("lenet5")
    assert (cfg.lr, cfg.distill, cfg.quant_epochs) == (MODEL_DEFAULTS["lenet5"]["schedule"]["lr"], True, 0.5)
    assert cfg.final_epochs == SCHEDULE_DEFAULTS["final_epochs"] and cfg.weight_decay == 0.0
    generic = CompressConfig(lr=0.01).for_model("resnet20")
    assert generic.lr == 0.01 and generic.centroid_lr == SCHEDULE_DEFAULTS["centroid_lr"]
    assert (generic.crop_padding, generic.flip) == (0, False)
    # the paper's LeNet-5 retrains on crops and flips unless told not to
    paper = CompressConfig().for_model("lenet5_caffe")
    assert (paper.crop_padding, paper.flip) == (2, True)
    assert CompressConfig(crop_padding=0, flip=False).for_model("lenet5_caffe").flip is False
    with pytest.raises(ValueError, match="--prune-iters must be >= 1, got 0"):
        compress("unused", "unused.cnnz", prune_iters=0)


@pytest.mark.slow
def test_an_interrupted_compression_continues_to_the_same_file(synthetic_lenet5_run, tmp_path, monkeypatch):
    kw = dict(sparsity="c5=0.9,f6=0.9,conv=0.5", bits="conv=4,fc=3", prune_iters=3, prune_epochs=0.25,
              final_epochs=0.25, quant_epochs=0.25, train_subset=512, progress=False,
              model_kwargs={"drop_rate": 0.2})  # dropout: the random state must come back too
    whole = compress(synthetic_lenet5_run, tmp_path / "whole.cnnz", **kw)
    assert whole["resumed_after_step"] == 0 and not (tmp_path / "whole.cnnz.partial").exists()

    out = tmp_path / "cut.cnnz"
    compress_cut_in_third_retraining(monkeypatch, synthetic_lenet5_run, out, **kw)
    partial = tmp_path / "cut.cnnz.partial"
    assert partial.is_file() and not out.exists()

    with pytest.raises(ValueError, match=r"cut.cnnz.partial holds an interrupted compression .*bits.*nothing was deleted"):
        compress(synthetic_lenet5_run, out, **{**kw, "bits": "conv=5,fc=3"})
    assert partial.is_file()

    resumed = compress(synthetic_lenet5_run, out, **kw)
    assert resumed["resumed_after_step"] == 2 and not partial.exists()
    assert out.read_bytes() == (tmp_path / "whole.cnnz").read_bytes()
    assert resumed["totals"] == whole["totals"]

    partial.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="cut.cnnz.partial is not a readable partial compression"):
        compress(synthetic_lenet5_run, out, **kw)
