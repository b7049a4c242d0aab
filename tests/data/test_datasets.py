import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.datasets import (
    Normalize,
    decode_image,
    iterate_batches,
    load_dataset,
    load_imagefolder,
    random_crop,
    random_cutout,
    random_flip,
    read_idx,
    resize_to,
    synthetic_dataset,
)
from tests.idx import write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float32])
def test_read_idx_roundtrip(tmp_path, suffix, dtype):
    t = (torch.arange(2 * 3 * 5) * 7 - 20).reshape(2, 3, 5).to(dtype)
    if dtype == torch.uint8:
        t = t.abs()
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, t)
    assert torch.equal(read_idx(path), t)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x03\x04" + b"\0" * 20)
    with pytest.raises(ValueError, match="bad.*not an IDX file"):
        read_idx(bad_magic)
    truncated = tmp_path / "trunc"
    write_idx(truncated, torch.zeros(4, 2, 2, dtype=torch.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"trunc: header says \(4, 2, 2\)"):
        read_idx(truncated)
    broken_gz = tmp_path / "x.gz"
    broken_gz.write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x05abcde")[:-6])
    with pytest.raises(ValueError, match="x.gz"):
        read_idx(broken_gz)


def test_fashion_mnist_is_read_whole(fmnist_dir):
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"


def test_mnist_format_from_data_dir(fmnist_small):
    ds = load_dataset("mnist", "test", data_dir=fmnist_small)
    assert ds.images.shape == (1000, 1, 28, 28) and ds.classes == [str(i) for i in range(10)]


def test_missing_data_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def test_unknown_dataset_suggests_close_names():
    with pytest.raises(ValueError, match="unknown dataset 'fashion_mnist'.*fashion-mnist"):
        load_dataset("fashion_mnist", "train")


def test_synthetic_is_learnable_and_reproducible():
    a = synthetic_dataset(64, (3, 16, 16), 4, seed=3)
    b = synthetic_dataset(64, (3, 16, 16), 4, seed=3)
    assert torch.equal(a.images, b.images) and a.images.shape == (64, 3, 16, 16)
    # the class band is brighter than the rest of the image
    for img, y in zip(a.images[:8], a.labels[:8]):
        row = int(y) * 16 // 4
        assert img[:, row].float().mean() > img.float().mean()


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def _make_folder(root, classes=("cat", "dog"), n=3, size=(20, 14)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            for i in range(n):
                arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                _save(Image.fromarray(arr), root / split / c / f"{i}.png")


def test_imagefolder_loads_and_resizes(tmp_path):
    _make_folder(tmp_path)
    ds = load_imagefolder(tmp_path, "train", (8, 8), 3)
    assert ds.images.shape == (6, 3, 8, 8) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    val = load_imagefolder(tmp_path, "val", (8, 8), 1, classes=ds.classes)
    assert val.images.shape == (6, 1, 8, 8)


def test_imagefolder_modes_are_converted(tmp_path):
    d = tmp_path / "train" / "a"
    _save(Image.new("L", (10, 10), 200), d / "grey.png")
    _save(Image.new("RGBA", (10, 10), (10, 20, 30, 0)), d / "rgba.png")
    _save(Image.new("P", (10, 10), 3), d / "palette.png")
    _save(Image.fromarray(np.full((10, 10), 40000, dtype=np.uint16)), d / "deep.png")
    _save(Image.new("RGB", (10, 10), (250, 0, 0)), d / "photo.jpg", quality=95)
    ds = load_imagefolder(tmp_path, "train", (10, 10), 3)
    assert ds.images.shape == (5, 3, 10, 10)
    assert int(ds.images[0, 0, 0, 0]) == 255  # 16-bit image scaled, not clipped to 0


def test_exif_orientation_is_respected(tmp_path):
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert decode_image(tmp_path / "r.jpg", 3).shape == (3, 30, 10)


def test_undecodable_image_is_named_or_skipped(tmp_path):
    _make_folder(tmp_path, n=2)
    bad = tmp_path / "train" / "cat" / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    (tmp_path / "train" / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="broken.jpg: cannot decode image"):
        load_imagefolder(tmp_path, "train", (8, 8), 3)
    ds = load_imagefolder(tmp_path, "train", (8, 8), 3, skip_bad=True)
    assert len(ds) == 4 and sorted(p.rsplit("/", 1)[1] for p in ds.skipped) == ["broken.jpg", "empty.png"]


def test_imagefolder_structure_errors(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "val" / "bird").mkdir()
    _save(Image.new("RGB", (4, 4)), tmp_path / "val" / "bird" / "x.png")
    with pytest.raises(ValueError, match=r"classes \['bird'\] are not in the training set"):
        load_imagefolder(tmp_path, "val", (8, 8), 3, classes=["cat", "dog"])
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: empty class folder"):
        load_imagefolder(tmp_path, "train", (8, 8), 3)


def test_resize_pads_small_growth_and_resizes_otherwise():
    x = torch.full((2, 1, 28, 28), 7, dtype=torch.uint8)
    padded = resize_to(x, (32, 32))
    assert padded.shape == (2, 1, 32, 32) and padded[0, 0, 0, 0] == 0 and padded[0, 0, 2, 2] == 7
    big = resize_to(x, (64, 48))
    assert big.shape == (2, 1, 64, 48) and big.dtype == torch.uint8 and int(big[0, 0, 30, 20]) == 7


def test_random_crop_translates_each_image():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).reshape(2, 3, 6, 6)
    assert torch.equal(random_crop(x, 0, g), x)
    out = random_crop(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # each output is some 6x6 window of the padded image, same for all channels
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(padded[i, :, dy:dy + 6, dx:dx + 6], out[i])]
        assert windows


def test_random_flip_flips_about_half():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(1000 * 4, dtype=torch.float32).reshape(1000, 1, 1, 4)
    out = random_flip(x, g)
    flipped = (out[:, 0, 0, 0] != x[:, 0, 0, 0])
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and 400 < flipped.sum() < 600


def test_random_cutout_blacks_out_one_square_per_image_cut_at_the_border():
    g = torch.Generator().manual_seed(0)
    x = torch.full((500, 2, 10, 10), 200, dtype=torch.uint8)
    out = random_cutout(x, 4, g)
    zero = out[:, 0] == 0
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0) and torch.equal(out[~(out == 0)], x[~(out == 0)])
    for mask in zero:  # one axis-aligned rectangle of at most 4x4: whole square inside, cut at the edges
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) <= 4 and len(cols) <= 4 and mask.sum() == len(rows) * len(cols)
        assert len(rows) == 0 or (rows.max() - rows.min() + 1 == len(rows) and (len(rows) == 4 or 0 in rows or 9 in rows))
    areas = zero.sum((1, 2))
    assert (areas == 16).float().mean() > 0.4 and areas.min() >= 4  # a centre on the image keeps >= 2x2
    assert torch.equal(random_cutout(x, 4, torch.Generator().manual_seed(0)), out)


def test_normalize_and_batches():
    ds = synthetic_dataset(10, (2, 4, 4), 3, seed=0)
    norm = Normalize((0.5, 0.25), (0.5, 0.25))
    x = norm(ds.images)
    ref = (ds.images.float() / 255 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    assert torch.allclose(x, ref, atol=1e-5)
    sizes = [len(y) for _, y in iterate_batches(ds, 4)]
    assert sizes == [4, 4, 2]
    g = torch.Generator().manual_seed(1)
    seen = torch.cat([y for _, y in iterate_batches(ds, 3, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == sorted(ds.labels.tolist())


def test_huge_image_is_reduced_while_decoding(tmp_path):
    import time

    big = Image.new("L", (10000, 10000), 90)
    big.paste(255, (0, 0, 5000, 10000))  # left half white
    big.save(tmp_path / "huge.png")
    del big
    start = time.perf_counter()
    t = decode_image(tmp_path / "huge.png", 3, fit_within=(32, 32))
    assert t.shape[0] == 3 and max(t.shape[1:]) < 200 and time.perf_counter() - start < 20
    assert int(t[0, 10, 5]) == 255 and int(t[0, 10, -5]) == 90
    small = resize_to(t, (32, 32))
    assert small.shape == (3, 32, 32)


def test_other_channel_counts_repeat_grey(tmp_path):
    _save(Image.new("RGB", (6, 6), (30, 60, 90)), tmp_path / "c.png")
    t = decode_image(tmp_path / "c.png", 4)
    assert t.shape == (4, 6, 6) and torch.equal(t[0], t[3])


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_files_are_rejected_with_their_path(tmp_path, fmt):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut.{fmt}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"cut.{fmt}: cannot decode image"):
        decode_image(path, 3)
