"""`cnnzoo explore` through its HTTP API (FastAPI's TestClient): the zoo and layer tables against
the library, predictions against `cnnzoo predict`, every bad request a client can send answered
with a 4xx JSON error while the server keeps serving, concurrency, the charts and speed."""
import asyncio
import base64
import csv
import http.client
import io
import json
import socket
import statistics
import struct
import time
import urllib.error
import urllib.request
import zlib

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnzoo.analysis import summary, summary_to_json
from cnnzoo.cli import build_parser
from cnnzoo.data.datasets import FASHION_MNIST_CLASSES
from cnnzoo.explore import create_app, zoo
from cnnzoo.inference.predict import predict_files
from cnnzoo.models.checkpoint import model_meta, save_weights
from cnnzoo.models.factory import create_model
from cnnzoo.models.registry import list_models
from cnnzoo.training.loop import METRIC_COLUMNS
from tests.browser import running_server


def make_run(folder, name="resnet18_cifar", size=(1, 28, 28)):
    """A run folder as `cnnzoo train` leaves it for prediction: weights with their metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model(name, in_chans=size[0], num_classes=10)
    model.set_pretrained_cfg(input_size=size, mean=(0.286,) * size[0], std=(0.353,) * size[0])
    save_weights(model, folder / "best.safetensors",
                 model_meta(model, classes=list(FASHION_MNIST_CLASSES), dataset="fashion-mnist", data_size=list(size)))
    return folder


# A run's metrics.csv as `cnnzoo train` writes it: epoch 2 not evaluated (--eval-every 3), so NaN.
METRICS_CSV = ",".join(METRIC_COLUMNS) + """
1,2.1,0.25,1.4,0.42,0.95,0.003,0.24,8188
2,1.5,0.45,nan,nan,nan,0.002,0.23,8804
3,1.0,0.6,0.88,0.67,0.98,0.001,0.22,8900
"""


def write_metrics(folder, text=METRICS_CSV):
    (folder / "metrics.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


def png_bytes(size=(60, 40), colour="red", mode="RGB"):
    buf = io.BytesIO()
    img = Image.new(mode, size, colour)
    img.paste(Image.new(mode, (size[0] // 3, size[1] // 3), "white"), (size[0] // 2, size[1] // 4))
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_header(width, height):
    """A PNG that claims ``width`` x ``height`` pixels in 60 bytes: what a decompression bomb shows."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore-runs")
    run = make_run(root / "r18")
    # A run folder as the accuracy chart reads it, one half-written, and a degradation result.
    done = root / "mlp-run"
    done.mkdir()
    (done / "config.json").write_text(json.dumps({"model": "lenet_300_100", "input_size": [1, 28, 28],
                                                  "classes": list(FASHION_MNIST_CLASSES)}))
    (done / "summary.json").write_text(json.dumps({"model": "lenet_300_100", "dataset": "fashion-mnist",
                                                   "test_top1": 0.8512, "input_size": [1, 28, 28]}))
    broken = root / "broken-run"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    deg = root / "degradation"
    deg.mkdir()
    curves = {m: dict(epoch=[1, 2], train_error=[0.3, 0.2], test_error=[0.35, 0.25]) for m in ("plain20", "resnet20")}
    (deg / "degradation.json").write_text(json.dumps({"models": curves, "findings": [{"text": "shortcuts help"}]}))
    return dict(root=root, run=run)


@pytest.fixture(scope="module")
def client(runs):
    app = create_app([runs["run"]], [runs["root"]], warm=False)
    with TestClient(app) as c:
        zoo.warm()
        yield c


def post_image(client, data, **fields):
    return client.post("/api/predict", files={"image": ("x.png", data, "image/png")}, data=fields)


def decode_data_url(url):
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_zoo(client):
    rows = client.get("/api/models").json()
    assert [r["name"] for r in rows] == list_models()
    r50 = next(r for r in rows if r["name"] == "resnet50")
    assert r50["gmacs"] == pytest.approx(4.089, abs=1e-3) and r50["params"] == 25_557_032
    assert {"family", "year", "input_size", "verified_against", "paper"} <= set(r50)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for r in rows:
        assert f'href="/models/{r["name"]}"' in page.text
    assert "He et al. 2015" in page.text and "torchvision:resnet50" in page.text


def test_model_summary_matches_the_library(client):
    got = client.get("/api/models/resnet50/summary").json()
    with torch.device("meta"):
        want = summary_to_json(summary(create_model("resnet50"), (3, 224, 224)))
    assert got["layers"] == want["layers"] and got["totals"] == want["totals"]
    assert got["totals"]["macs"] == 4_089_184_256
    stages = [p for p in got["stages"] if p["stage"]]
    assert [p["name"] for p in stages] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert [len(p["blocks"]) for p in stages[1:]] == [3, 4, 6, 3]  # He et al. Table 1, 50-layer
    page = client.get("/models/resnet50").text
    assert '<span class="big" id="gmacs">4.09</span>' in page and "layer4.2.conv3" in page

    small = client.get("/api/models/resnet50/summary", params={"input": "3,64,64"}).json()
    assert small["input_size"] == [3, 64, 64] and small["totals"]["macs"] < got["totals"]["macs"] / 10
    assert client.get("/models/resnet50", params={"input": "3,64,64"}).status_code == 200


def test_predict_matches_cnnzoo_predict(client, runs, tmp_path):
    data = png_bytes()
    (tmp_path / "x.png").write_bytes(data)
    res = post_image(client, data, topk="3", occlusion="true", features="true", layer="layer3").json()
    (r,) = res["results"]
    want = predict_files(runs["run"], [tmp_path / "x.png"], topk=3)[0]["top"]
    assert [t["class"] for t in r["top"]] == [t["class"] for t in want]
    assert [t["prob"] for t in r["top"]] == pytest.approx([t["prob"] for t in want], abs=1e-5)
    assert r["checkpoint"] == "r18" and r["model"] == "resnet18_cifar"
    for kind in ("input", "cam", "occlusion"):
        img = decode_data_url(r["images"][kind])
        assert img.size == (28, 28) and img.mode == "RGB"
    assert decode_data_url(r["images"]["features"]).size[0] > 28  # a grid of 16 maps
    # Without the maps asked for, none is computed.
    bare = post_image(client, data, cam="false").json()["results"][0]
    assert set(bare["images"]) == {"input"}


def test_sample_images_and_filters(client, fmnist_dir):
    items = client.get("/api/checkpoints/r18/samples").json()
    assert len(items) == 12 and all(i["label"] in FASHION_MNIST_CLASSES for i in items)
    png = client.get("/api/checkpoints/r18/samples/3.png")
    assert Image.open(io.BytesIO(png.content)).size == (28, 28)
    res = client.post("/api/predict", data={"sample": "3", "checkpoint": "r18"})
    assert res.status_code == 200 and len(res.json()["results"][0]["top"]) == 5
    filters = client.get("/api/checkpoints/r18/filters.png")
    assert filters.status_code == 200 and Image.open(io.BytesIO(filters.content)).size[0] > 64


def _chunked(total, step=1 << 20):
    sent = 0
    while sent < total:
        yield b"x" * step
        sent += step


BAD_REQUESTS = {
    "garbage bytes": (lambda c: post_image(c, b"\x00garbage" * 100), 400, "not an image"),
    "empty file": (lambda c: post_image(c, b""), 400, "empty"),
    "30 MB file": (lambda c: post_image(c, b"\x89PNG" + bytes(30 * 2**20)), 413, "limited to 10,485,760 bytes"),
    "30 MB streamed": (lambda c: c.post("/api/predict", content=_chunked(30 * 2**20),
                                        headers={"content-type": "multipart/form-data; boundary=b"}), 413, "limited to"),
    "20000 x 20000 PNG": (lambda c: post_image(c, png_header(20000, 20000)), 413, "limit"),
    "8000 x 8000 PNG": (lambda c: post_image(c, png_header(8000, 8000)), 413, "8000 x 8000 = 64,000,000 pixels"),
    "unknown model": (lambda c: c.get("/api/models/resnet51/summary"), 404, "unknown model 'resnet51'"),
    "unknown model page": (lambda c: c.get("/models/resnet51"), 404, "unknown model"),
    "bad input size": (lambda c: c.get("/api/models/resnet50/summary?input=3,224"), 400, "three integers"),
    "input too large": (lambda c: c.get("/api/models/resnet50/summary?input=3,99999,9"), 400, "out of range"),
    "input too small": (lambda c: c.get("/api/models/alexnet/summary?input=3,8,8"), 400, "at least"),
    "wrong field": (lambda c: c.post("/api/predict", files={"file": ("x.png", png_bytes(), "image/png")}),
                    422, "fields received: 'file'"),
    "no body": (lambda c: c.post("/api/predict"), 422, "'image'"),
    "topk not a number": (lambda c: post_image(c, png_bytes(), topk="abc"), 422, "topk"),
    "topk 0": (lambda c: post_image(c, png_bytes(), topk="0"), 422, "topk"),
    "unknown checkpoint": (lambda c: post_image(c, png_bytes(), checkpoint="../../etc/passwd"), 404,
                           "unknown checkpoint '../../etc/passwd'"),
    "unknown layer": (lambda c: post_image(c, png_bytes(), features="true", layer="layer9"), 400, "no layer 'layer9'"),
    "sample out of range": (lambda c: c.post("/api/predict", data={"sample": "99", "checkpoint": "r18"}), 404,
                            "out of range"),
    "unknown route": (lambda c: c.get("/api/nothing"), 404, "Not Found"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(client, case, fmnist_dir):
    send, status, words = BAD_REQUESTS[case]
    res = send(client)
    assert res.status_code == status, res.text
    body = res.json()
    assert body["status"] == status and words in body["error"], body
    assert post_image(client, png_bytes(), cam="false").status_code == 200


def _urllib_post(url, data):
    """(status, JSON body) of a POST through Python's urllib, which sends the whole body before
    reading the answer; a generator body goes chunked, with no length declared."""
    req = urllib.request.Request(url + "/api/predict", data=data,
                                 headers={"content-type": "multipart/form-data; boundary=b"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _raw_post_headers(url, length, *extra):
    """Send only a POST's headers declaring ``length`` bytes; the whole answer, read to the close."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall("\r\n".join(["POST /api/predict HTTP/1.1", f"Host: {host}", "Content-Type: image/png",
                                   f"Content-Length: {length}", *extra, "", ""]).encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_oversize_upload_is_answered_413_to_a_client_that_sends_it_all(runs):
    """Over a real socket: the 30 MB body is read and discarded before the 413, so urllib gets the
    answer instead of a reset, and the connection stays fit for the next request."""
    with running_server(create_app([runs["run"]], [], warm=False)) as url:
        for body in (bytes(30 * 2**20), _chunked(30 * 2**20)):
            status, err = _urllib_post(url, body)
            assert (status, err["status"]) == (413, 413) and "limited to 10,485,760 bytes" in err["error"], err
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.request("POST", "/api/predict", body=bytes(30 * 2**20), headers={"content-type": "image/png"})
        res = conn.getresponse()
        assert res.status == 413 and "limited to" in json.load(res)["error"]
        conn.request("GET", "/api/checkpoints")  # the same connection
        res = conn.getresponse()
        assert res.status == 200 and [c["id"] for c in json.load(res)] == ["r18"]
        conn.close()


def test_upload_past_the_drain_limit_is_cut_off_and_the_server_keeps_serving(runs):
    """Past ``max_drain`` the 413 goes out at once and the connection is closed: a client still
    sending may see a reset instead, as documented; one that waits for it reads the 413."""
    mb = 2**20
    with running_server(create_app([], [], max_upload=mb, max_drain=4 * mb, warm=False)) as url:
        status, err = _urllib_post(url, bytes(3 * mb))  # within the drain limit: read, then 413
        assert status == 413 and "limited to 1,048,576 bytes" in err["error"]
        for body in (bytes(30 * mb), _chunked(30 * mb)):
            try:
                assert _urllib_post(url, body)[0] == 413
            except (urllib.error.URLError, ConnectionError):
                pass  # reset while sending: the connection was closed
            assert urllib.request.urlopen(url + "/api/checkpoints", timeout=30).status == 200
        for length, extra in ((30 * mb, ()), (3 * mb, ("Expect: 100-continue",))):
            head, _, body = _raw_post_headers(url, length, *extra).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower(), head
            assert f"request body of {length:,}+ bytes".encode() in body
        with pytest.raises(ValueError, match="max_drain 1,048,576 is below the upload limit"):
            create_app([], [], max_upload=4 * mb, max_drain=mb, warm=False)


def test_no_client_path_is_opened(client, runs):
    # Ids are looked up among the loaded checkpoints; a path, even to a real run, is not one.
    res = post_image(client, png_bytes(), checkpoint=str(runs["run"]))
    assert res.status_code == 404 and "unknown checkpoint" in res.json()["error"]
    assert client.get("/static/../app.py").status_code == 404


def test_concurrent_predictions_and_the_pages_stay_responsive(client):
    app, data = client.app, png_bytes()

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://explore") as ac:
            done = {}

            async def predict(i):
                res = await ac.post("/api/predict", files={"image": ("x.png", data, "image/png")})
                done[i] = time.perf_counter()
                return res

            async def page():
                await asyncio.sleep(0.05)  # once the predictions have started
                res = await ac.get("/api/models")
                done["page"] = time.perf_counter()
                return res

            results = await asyncio.gather(*(predict(i) for i in range(20)), page())
            return results, done

    results, done = asyncio.run(main())
    assert all(r.status_code == 200 for r in results)
    tops = {json.dumps(r.json()["results"][0]["top"]) for r in results[:20]}
    assert len(tops) == 1  # the same image, the same answer: no prediction saw another's hooks
    assert done["page"] < max(done[i] for i in range(20))  # answered while predictions were running


def test_charts(client):
    acc = client.get("/api/charts/accuracy").json()
    assert acc["runs"] == 1 and any("broken-run" in s for s in acc["skipped"])
    ours, published = acc["figure"]["data"]
    assert ours["text"] == ["lenet_300_100"] and ours["y"] == [pytest.approx(85.12)]
    assert len(published["x"]) > 10 and acc["figure"]["layout"]["xaxis"]["type"] == "log"
    deg = client.get("/api/charts/degradation").json()
    assert len(deg["figure"]["data"]) == 4 and deg["findings"] == ["shortcuts help"]
    page = client.get("/charts").text
    assert '<script src="/plotly.min.js">' in page and "http" not in page.replace("http-equiv", "")
    js = client.get("/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000


BAD_METRICS = {
    "empty": ("", "empty, no header row"),
    "no epoch column": ("loss,top1\n1,2\n", "no 'epoch' column in its header (loss, top1)"),
    "nothing to plot": ("epoch,foo\n1,2\n", "none of the columns train_loss, test_loss"),
    "not a number": (METRICS_CSV.replace("1.5,0.45", "1.5,abc"), "line 3, column 'train_top1': 'abc' is not a number"),
    "short row": (METRICS_CSV + "4,0.9\n", "line 5: 2 fields where its header has 9"),
    "epoch not a number": ("epoch,train_loss\n1,2\nnan,1\n", "line 3: epoch 'nan' is not a finite number"),
    "not text": (b"epoch,train_loss\n\xff\xfe,1\n", "not UTF-8 text"),
}


def test_run_curves_from_metrics_csv(tmp_path):
    run = write_metrics(make_run(tmp_path / "lenet", "lenet5"))
    loose = tmp_path / "loose.safetensors"
    loose.write_bytes((run / "best.safetensors").read_bytes())
    with TestClient(create_app([run, run / "best.safetensors", loose], [], warm=False)) as c:
        got = c.get("/api/checkpoints/lenet/curves").json()
        assert got["epochs"] == 3 and got["source"] == str(run / "metrics.csv")
        assert got["columns"]["test_top1"] == [0.42, None, 0.67] and got["columns"]["lr"] == [0.003, 0.002, 0.001]
        traces = {t["name"]: t for t in got["figure"]["data"]}
        assert list(traces) == ["train loss", "test loss", "train top1", "test top1", "lr"]
        assert traces["train top1"]["y"] == [25.0, 45.0, 60.0] and traces["train top1"]["line"]["dash"] == "dash"
        assert traces["test top1"]["y"] == [42.0, None, 67.0] and traces["test top1"]["x"] == [1, 2, 3]
        # A weights file reads the run folder it sits in; one outside a run has no curves.
        assert c.get("/api/checkpoints/best.safetensors/curves").json()["columns"] == got["columns"]
        res = c.get("/api/checkpoints/loose.safetensors/curves")
        assert res.status_code == 404 and f"no metrics.csv in {tmp_path}" in res.json()["error"]
        res = c.get("/api/checkpoints/nothing/curves")
        assert res.status_code == 404 and "unknown checkpoint 'nothing'" in res.json()["error"]
        for case, (text, words) in BAD_METRICS.items():
            write_metrics(run, text)
            res = c.get("/api/checkpoints/lenet/curves")
            assert res.status_code == 400 and res.json()["status"] == 400, (case, res.text)
            assert str(run / "metrics.csv") in res.json()["error"] and words in res.json()["error"], case
            assert c.get("/api/checkpoints").status_code == 200
        write_metrics(run, ",".join(METRIC_COLUMNS[:5]) + "\n1,2.1,0.25,1.4,0.42\n")  # no lr: two panels
        assert [t["name"] for t in c.get("/api/checkpoints/lenet/curves").json()["figure"]["data"]] == [
            "train loss", "test loss", "train top1", "test top1"]
        page = c.get("/try").text
        assert '<div id="curves">' in page and '<script src="/plotly.min.js">' in page


def test_speed_once_warm(client):
    """The issue's targets (1 s) with room for a shared two-core machine: the pages from their caches,
    a prediction with Grad-CAM of resnet18_cifar."""
    def median(call, n=3):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            assert call().status_code == 200
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    data = png_bytes()
    assert median(lambda: client.get("/")) < 2.0
    assert median(lambda: client.get("/models/resnet50")) < 2.0
    assert median(lambda: post_image(client, data)) < 2.0


def test_int8_file_predicts_with_occlusion_and_says_why_there_is_no_grad_cam(synthetic_lenet5_run, tmp_path):
    from cnnzoo.inference.quantize import quantize

    int8 = tmp_path / "lenet5.int8.onnx"
    quantize(int8, checkpoint=synthetic_lenet5_run, calib_images=64, check_images=64)
    with TestClient(create_app([synthetic_lenet5_run, int8], [], warm=False)) as c:
        listed = {d["id"]: d for d in c.get("/api/checkpoints").json()}
        assert (listed[int8.name]["precision"], listed[int8.name]["methods"], listed[int8.name]["layers"]) == (
            "int8", ["occlusion"], [])
        assert listed[synthetic_lenet5_run.name]["methods"] == ["cam", "occlusion", "features"]
        assert "lenet5.int8.onnx (lenet5, synthetic, int8)" in c.get("/try").text
        res = post_image(c, png_bytes(), occlusion="true")  # every checkpoint, Grad-CAM asked for too
        assert res.status_code == 200, res.text
        fp32, q8 = res.json()["results"]
        assert set(fp32["images"]) == {"input", "cam", "occlusion"} and "unavailable" not in fp32
        assert set(q8["images"]) == {"input", "occlusion"} and "Grad-CAM needs the PyTorch network" in q8["unavailable"]["cam"]
        assert q8["top"][0]["class"] == fp32["top"][0]["class"]
        assert decode_data_url(q8["images"]["occlusion"]).size == decode_data_url(fp32["images"]["occlusion"]).size
        res = c.get(f"/api/checkpoints/{int8.name}/filters.png")
        assert res.status_code == 404 and "ONNX file" in res.json()["error"]
        # The run's curves are its metrics.csv, as `cnnzoo train` wrote it.
        rows = list(csv.DictReader((synthetic_lenet5_run / "metrics.csv").read_text().splitlines()))
        curves = c.get(f"/api/checkpoints/{synthetic_lenet5_run.name}/curves").json()["columns"]
        assert curves["test_top1"] == [float(r["test_top1"]) for r in rows] and curves["epoch"] == [1]


def test_cli_and_app_arguments(tmp_path):
    args = build_parser().parse_args(["explore"])
    assert (args.host, args.port, args.checkpoint, args.runs) == ("127.0.0.1", 8765, None, None)
    args = build_parser().parse_args(["explore", "--checkpoint", "a", "--checkpoint", "b", "--runs", "r"])
    assert args.checkpoint == ["a", "b"] and args.runs == ["r"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        create_app([], [tmp_path / "missing"], warm=False)
    with pytest.raises(FileNotFoundError):
        create_app([tmp_path / "missing-run"], [], warm=False)
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        create_app([tmp_path / "model.onnx"], [], warm=False)
    # Without checkpoints the zoo still works; prediction says what to pass.
    with TestClient(create_app([], [], warm=False)) as c:
        res = post_image(c, png_bytes())
        assert res.status_code == 404 and "--checkpoint" in res.json()["error"]
        assert "No checkpoint loaded" in c.get("/try").text


def test_cnnzoo_explore_serves(runs):
    """The command itself: uvicorn on the loopback address, the checkpoint loaded, stopped cleanly."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port free a moment ago; the server takes it right away
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", "explore", "--checkpoint", str(runs["run"]),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                res = httpx.get(f"http://127.0.0.1:{port}/api/checkpoints", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "cnnzoo explore did not start"
                time.sleep(0.3)
        assert [c["id"] for c in res.json()] == ["r18"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
