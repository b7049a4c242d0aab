"""The explorer's FastAPI application: pages, JSON APIs and the guards in front of them.

Every error a client can cause is a 4xx JSON body ``{"error": "...", "status": N}`` naming the
problem; model work (summaries on first use, predictions, filters) runs in the thread pool so that
the event loop keeps serving pages while a network computes.
"""
from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnzoo.explore import charts, inference, zoo
from cnnzoo.explore.inference import Checkpoint, ImageRejected
from cnnzoo.explore.zoo import UnknownName

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024
DRAIN_FACTOR = 10  # an oversize body up to this many times the upload limit is read before the 413
_MULTIPART_SLACK = 64 * 1024  # boundaries and the small form fields around the file


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


class UploadLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before any of it is
    parsed or spooled to disk, whether the client declares its length or streams it.

    The rest of such a body is read and discarded first, up to ``drain_bytes`` in all: a client
    that sends its whole body before reading the answer (Python's urllib, requests) would see the
    connection reset instead of the 413. A body declared or grown past ``drain_bytes``, or one
    the client holds back until told to continue (``Expect: 100-continue``), is answered at once
    with ``Connection: close``; a client still sending then may see the reset.
    """

    def __init__(self, app: Any, max_bytes: int, drain_bytes: int) -> None:
        self.app, self.max_bytes, self.drain_bytes = app, max_bytes, drain_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            held_back = headers.get(b"expect", b"").lower() == b"100-continue"
            drain = not held_back and int(declared) <= self.drain_bytes
            return await self._refuse(scope, receive, send, received=0, more=True, drain=drain, size=int(declared))
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return await self._refuse(scope, receive, send, received=total, more=message.get("more_body", False))
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any, *, received: int, more: bool,
                      drain: bool = True, size: int = 0) -> None:
        """Read and discard the rest of the body (``received`` bytes of it so far) while it stays
        within ``drain_bytes``, then answer 413, closing the connection if some is left unread."""
        while more and drain and received <= self.drain_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received += len(message.get("body", b""))
            more = message.get("more_body", False)
        limit = self.max_bytes - _MULTIPART_SLACK
        size = max(size, received)
        response = _error(413, f"request body of {size:,}+ bytes: uploads are limited to {limit:,} bytes")
        if more:
            response.headers["connection"] = "close"
        await response(scope, receive, send)


def _package_dir(name: str) -> str:
    return str(resources.files("cnnzoo.explore").joinpath(name))


def create_app(checkpoints: Sequence[str | Path] = (), runs: Sequence[str | Path] = (), *,
               max_upload: int = DEFAULT_MAX_UPLOAD, max_drain: int | None = None,
               max_pixels: int = inference.DEFAULT_MAX_PIXELS, warm: bool = True) -> FastAPI:
    """The explorer for ``checkpoints`` (run folders or weights files, loaded now) and the runs
    under ``runs`` (read when a chart is asked for, so new runs show up on reload). With ``warm``
    the zoo table, resnet50's summary and Captum's import are done in the background at start-up.
    An upload over ``max_upload`` bytes is answered 413 once its body has been read, up to
    ``max_drain`` bytes (default ``DRAIN_FACTOR`` times ``max_upload``); past that the connection
    is closed after the 413 (``UploadLimit``)."""
    drain = DRAIN_FACTOR * max_upload if max_drain is None else max_drain
    if drain < max_upload:
        raise ValueError(f"max_drain {drain:,} is below the upload limit max_upload {max_upload:,}")
    loaded = inference.load_checkpoints(list(checkpoints))
    run_roots = [Path(r) for r in runs]
    for root in run_roots:
        if not root.exists():
            raise FileNotFoundError(f"--runs {root}: no such folder")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm:
            threading.Thread(target=_warm_up, name="cnnzoo-explore-warm", daemon=True).start()
        yield

    app = FastAPI(title="cnnzoo explore", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.checkpoints, app.state.runs = loaded, run_roots
    app.state.max_upload, app.state.max_pixels = max_upload, max_pixels
    app.add_middleware(UploadLimit, max_bytes=max_upload + _MULTIPART_SLACK, drain_bytes=drain + _MULTIPART_SLACK)
    app.mount("/static", StaticFiles(directory=_package_dir("static")), name="static")
    templates = Jinja2Templates(directory=_package_dir("templates"))
    _add_error_handlers(app)
    _add_pages(app, templates)
    _add_api(app)
    return app


def _warm_up() -> None:
    zoo.warm()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(ImageRejected)
    async def rejected(request: Request, exc: ImageRejected) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(UnknownName)
    async def unknown(request: Request, exc: UnknownName) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return _error(400, str(exc))


def _checkpoint(app: FastAPI, cid: str | None) -> list[Checkpoint]:
    """The checkpoint a client names (by id; never a path), or all of them when it names none."""
    loaded: dict[str, Checkpoint] = app.state.checkpoints
    if not loaded:
        raise UnknownName("no checkpoint loaded: start the explorer with --checkpoint RUN_DIR|FILE")
    if cid is None or cid == "":
        return list(loaded.values())
    if cid not in loaded:
        raise UnknownName(f"unknown checkpoint {cid!r}; loaded: {', '.join(loaded)}")
    return [loaded[cid]]


def _add_pages(app: FastAPI, templates: Jinja2Templates) -> None:
    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        ckpts = [c.describe() for c in app.state.checkpoints.values()]
        return templates.TemplateResponse(request, template, dict(checkpoints=ckpts, **context))

    @app.get("/", response_class=HTMLResponse)
    async def zoo_page(request: Request) -> HTMLResponse:
        return page(request, "zoo.html", models=await run_in_threadpool(zoo.zoo_table))

    @app.get("/models/{name}", response_class=HTMLResponse)
    async def model_page(request: Request, name: str, input: str | None = None) -> HTMLResponse:
        zoo.check_model(name)
        size = zoo.parse_input(input, name)
        result = await run_in_threadpool(zoo.model_summary, name, size)
        mine = [c.id for c in app.state.checkpoints.values() if c.architecture == name and not c.graph_only]
        return page(request, "model.html", name=name, s=result, filters=mine, input_text=",".join(map(str, size)))

    @app.get("/try", response_class=HTMLResponse)
    async def try_page(request: Request) -> HTMLResponse:
        return page(request, "try.html")

    @app.get("/charts", response_class=HTMLResponse)
    async def charts_page(request: Request) -> HTMLResponse:
        return page(request, "charts.html", runs=[str(r) for r in app.state.runs])

    @app.get("/plotly.min.js")
    async def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    """Plotly's own bundle, from its Python package: the charts work offline."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _add_api(app: FastAPI) -> None:
    @app.get("/api/models")
    async def models() -> list[dict[str, Any]]:
        return await run_in_threadpool(zoo.zoo_table)

    @app.get("/api/models/{name}/summary")
    async def model_summary(name: str, input: str | None = None) -> dict[str, Any]:
        zoo.check_model(name)
        return await run_in_threadpool(zoo.model_summary, name, zoo.parse_input(input, name))

    @app.get("/api/checkpoints")
    async def checkpoints() -> list[dict[str, Any]]:
        return [c.describe() for c in app.state.checkpoints.values()]

    @app.get("/api/checkpoints/{cid}/filters.png")
    async def filters(cid: str) -> Response:
        (ckpt,) = _checkpoint(app, cid)
        return Response(await run_in_threadpool(inference.first_layer_filters_png, ckpt), media_type="image/png")

    @app.get("/api/checkpoints/{cid}/curves")
    async def curves(cid: str) -> dict[str, Any]:
        (ckpt,) = _checkpoint(app, cid)
        return await run_in_threadpool(charts.run_curves, ckpt.id, ckpt.source)

    @app.get("/api/checkpoints/{cid}/samples")
    async def samples(cid: str) -> list[dict[str, Any]]:
        (ckpt,) = _checkpoint(app, cid)
        ds = await run_in_threadpool(inference.sample_images, ckpt)
        return [dict(index=i, label=ds.classes[int(y)]) for i, y in enumerate(ds.labels)]

    @app.get("/api/checkpoints/{cid}/samples/{index}.png")
    async def sample_png(cid: str, index: int) -> Response:
        (ckpt,) = _checkpoint(app, cid)
        return Response(await run_in_threadpool(_sample_png, ckpt, index), media_type="image/png")

    @app.post("/api/predict")
    async def predict(request: Request, image: UploadFile | None = File(None), sample: int | None = Form(None),
                      checkpoint: str | None = Form(None), topk: int = Form(5, ge=1, le=inference.TOPK_MAX),
                      cam: bool = Form(True), occlusion: bool = Form(False), features: bool = Form(False),
                      layer: str | None = Form(None)) -> dict[str, Any]:
        targets = _checkpoint(app, checkpoint)
        if (image is None) == (sample is None):
            got = ", ".join(repr(k) for k in (await request.form()).keys()) or "none"
            raise ImageRejected(f"send the image as the multipart file field 'image' (or 'sample' with "
                                f"'checkpoint' for a test image); fields received: {got}", 422)
        if image is not None:
            data = await image.read(app.state.max_upload + 1)
            inference.check_upload(data, app.state.max_upload, app.state.max_pixels)
        else:
            if len(targets) != 1:
                raise ImageRejected("'sample' picks a test image of one checkpoint's dataset: name the 'checkpoint'", 422)
            data = await run_in_threadpool(_sample_png, targets[0], sample)
        results = []
        for ckpt in targets:
            x = await run_in_threadpool(inference.decode_upload, ckpt, data)
            results.append(await run_in_threadpool(inference.predict, ckpt, x, topk=topk, cam=cam,
                                                   occlusion=occlusion, features=features, layer=layer or None))
        return {"results": results}

    @app.get("/api/charts/accuracy")
    async def accuracy() -> dict[str, Any]:
        return await run_in_threadpool(charts.accuracy_chart, app.state.runs)

    @app.get("/api/charts/degradation")
    async def degradation() -> dict[str, Any]:
        return await run_in_threadpool(charts.degradation_chart, app.state.runs)


def _sample_png(ckpt: Checkpoint, index: int) -> bytes:
    from PIL import Image

    ds = inference.sample_images(ckpt)
    if not 0 <= index < len(ds):
        raise UnknownName(f"sample {index} out of range: checkpoint {ckpt.id!r} offers samples 0-{len(ds) - 1}")
    arr = ds.images[index].permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()
