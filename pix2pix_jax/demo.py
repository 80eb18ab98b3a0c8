"""A local web page to try a trained model: draw (or drop an image), get its translation.

    python -m pix2pix_jax.demo --workdir=DIR [--port=8000] [--host=127.0.0.1]
        [--checkpoint=latest] [--mode=paper|deterministic] [--seed=S]

The page (`demo_page.html`) draws on a canvas of the model's trained size:
with the 12 CMP Facades classes (by name) for a facades-like labels -> photo
model, a black pen on white for an edges -> photo model, a free colour
otherwise; an image can also be dropped on it. Translate (or each finished
stroke) posts the canvas as PNG and shows the output, K dropout samples side
by side in paper mode; the run's latest val metrics and sample grid are shown
beside it. The generator runs at the image's own size (`predict.native_generate`).

Endpoints: `GET /` (the page), `GET /info.json` (the model, palette, metrics),
`GET /examples.png` (the run's latest sample grid), `POST /translate?samples=K`
(body: a PNG or JPEG of at most MAX_UPLOAD_BYTES and MAX_SIDE pixels a side;
reply: JSON with the outputs as PNG data URLs). A bad request gets a 4xx with a
JSON `error` message and the server keeps serving. It binds to loopback unless
told otherwise. Installed as the console script `pix2pix-demo`.
"""

import base64
import dataclasses
import glob
import io
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import ml_collections
import numpy as np
from absl import flags
from PIL import Image

from pix2pix_jax import assembly, cli, evaluate, input_pipeline, predict, steps, writers
from pix2pix_jax.datasets import images, synthetic_facades
from pix2pix_jax.errors import ConfigError, DataError

PROG = "pix2pix_jax.demo"

MAX_UPLOAD_BYTES = 4 * 2**20  # a 1024x1024 PNG of a photo fits
MAX_SIDE = 1024  # pixels a side: the translation of larger images takes too long for a page
MAX_SAMPLES = 4  # dropout samples per request, in paper mode
SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
DRAWING_ID = 0  # the image id of whatever is posted: its dropout keys (steps.image_keys)


class UploadError(Exception):
    """A request the server refuses, with its HTTP status and a message for the user."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class DemoModel:
    """A restored generator ready to translate, and what the page shows about its run."""

    translate: Callable  # predict.make_native_translate's function
    config: ml_collections.ConfigDict
    workdir: str
    step: int
    mode: str
    seed: int
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def run(self, image: np.ndarray, samples: int) -> list[np.ndarray]:
        """`samples` uint8 translations of the uint8 HWC `image`, at its own size."""
        outputs = []
        # One request at a time: concurrent ones would only share the cores and the memory.
        with self.lock:
            for sample in range(samples):
                keys = steps.image_keys(self.seed, sample, [DRAWING_ID])
                outputs.append(writers.to_uint8(self.translate(image[None], keys))[0])
        return outputs


def load_model(
    workdir: str, checkpoint: str | int = "latest", mode: str | None = None, seed: int | None = None
) -> DemoModel:
    """The model of a checkpoint of the run in `workdir`, compiled for its trained size."""
    evaluate.check_mode(mode)
    config, state, step = assembly.restore_for_inference(workdir, checkpoint)
    if config.dataset.get("label_nc", 0):  # the page draws colours, not class ids
        raise ConfigError(
            f"{workdir}: the model takes label maps (dataset.label_nc="
            f"{config.dataset.label_nc}), which the demo page cannot draw; use predict"
        )
    mode = config.eval.mode if mode is None else mode
    translate = predict.make_native_translate(state, assembly.inference_setup(config), mode)
    model = DemoModel(translate, config, workdir, step, mode, config.seed if seed is None else seed)
    height, width = input_pipeline.image_shape(config)
    model.run(np.zeros((height, width, config.dataset.input_channels), np.uint8), 1)  # compile
    return model


def palette(config: ml_collections.ConfigDict) -> dict:
    """What the page draws with: `kind`, named `colours`, the `pen` index, the `background`."""
    name, direction = config.dataset.name.lower(), input_pipeline.direction(config.dataset)
    if "facades" in name and direction == "BtoA":  # labels (B) -> photo (A)
        colours = [
            {"name": n, "rgb": [int(v) for v in c]}
            for n, c in zip(synthetic_facades.CLASS_NAMES, synthetic_facades.PALETTE, strict=True)
        ]
        hint = "paint CMP Facades labels: pick a class, draw rectangles or strokes."
        return dict(kind="labels", colours=colours, pen=2, background=colours[1]["rgb"], hint=hint)
    ink = [{"name": "ink", "rgb": [0, 0, 0]}, {"name": "eraser", "rgb": [255, 255, 255]}]
    if "edges" in name and direction == "AtoB":
        hint = "draw the edges of an object with the black pen."
        return dict(kind="edges", colours=ink, pen=0, background=[255, 255, 255], hint=hint)
    hint = "draw, or drop an image of the kind the model was trained on."
    return dict(kind="free", colours=ink, pen=0, background=[255, 255, 255], hint=hint)


def val_metrics(workdir: str, split: str) -> dict | None:
    """The last eval line of `split` in the run's metrics.jsonl, None without one."""
    last = None
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            for line in f:
                record = json.loads(line) if line.strip() else {}
                if record.get("split") == split:
                    last = record
    except (OSError, ValueError):
        return None  # a run without metrics (a converted model) still gets its page
    return last


def latest_samples(workdir: str) -> str | None:
    """The path of the run's latest sample grid (input | output | target rows), if any."""
    grids = sorted(glob.glob(os.path.join(glob.escape(workdir), "samples", "step_*.png")))
    return grids[-1] if grids else None


def page_info(model: DemoModel) -> dict:
    """The JSON the page reads at load: the model, its palette, its val metrics."""
    config = model.config
    height, width = input_pipeline.image_shape(config)
    return dict(
        workdir=os.path.basename(os.path.normpath(model.workdir)),
        generator=config.model.generator,
        dataset=config.dataset.name,
        step=model.step,
        mode=model.mode,
        height=height,
        width=width,
        palette=palette(config),
        max_samples=MAX_SAMPLES if model.mode == "paper" else 1,
        metrics=val_metrics(model.workdir, config.eval.split),
        examples=latest_samples(model.workdir) is not None,
    )


def decode_upload(body: bytes, content_type: str, channels: int) -> np.ndarray:
    """The posted image as uint8 HWC with `channels` channels; UploadError if refused."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in SIGNATURES:
        raise UploadError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {kind or 'missing'}: post an image/png or image/jpeg",
        )
    if not body.startswith(SIGNATURES[kind]):
        raise UploadError(HTTPStatus.BAD_REQUEST, f"the body is not a {kind} image")
    try:  # the header only: the size is checked before any pixel is decoded
        with Image.open(io.BytesIO(body)) as header:
            width, height = header.size
    except (OSError, ValueError, SyntaxError) as e:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"the upload: not an image ({e})") from None
    if max(width, height) > MAX_SIDE:
        raise UploadError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the upload is {width}x{height}; at most {MAX_SIDE} pixels a side",
        )
    try:
        picture = images.decode(body, "the upload", max_pixels=MAX_SIDE * MAX_SIDE)
    except DataError as e:
        raise UploadError(HTTPStatus.BAD_REQUEST, str(e)) from None
    converted = picture.convert(input_pipeline.CHANNEL_MODES[channels])
    return np.asarray(converted).reshape(converted.height, converted.width, channels)


def png_data_url(image: np.ndarray) -> str:
    """A uint8 HWC image as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def translate_request(model: DemoModel, body: bytes, content_type: str, query: str) -> dict:
    """The reply to POST /translate: the outputs as data URLs, their size, the time taken."""
    params = urllib.parse.parse_qs(query)
    try:
        samples = int(params.get("samples", ["1"])[0])
    except ValueError:
        raise UploadError(HTTPStatus.BAD_REQUEST, "samples must be an integer") from None
    limit = MAX_SAMPLES if model.mode == "paper" else 1
    if not 1 <= samples <= limit:
        raise UploadError(
            HTTPStatus.BAD_REQUEST, f"samples must be 1..{limit} in {model.mode} mode"
        )
    image = decode_upload(body, content_type, model.config.dataset.input_channels)
    start = time.perf_counter()
    outputs = model.run(image, samples)
    milliseconds = round(1000 * (time.perf_counter() - start))
    height, width = image.shape[:2]
    urls = [png_data_url(o) for o in outputs]
    return dict(outputs=urls, width=width, height=height, milliseconds=milliseconds)


def page_html() -> bytes:
    """The page, from the package's data."""
    return resources.files("pix2pix_jax").joinpath("demo_page.html").read_bytes()


class DemoHandler(BaseHTTPRequestHandler):
    """The demo's requests; `make_handler` binds a subclass to a model and the page."""

    timeout = 30  # seconds a client may stall a connection (a slow upload included)
    model: DemoModel
    page: bytes

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        """The page, its description, the val examples; 404 for anything else."""
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._reply(HTTPStatus.OK, "text/html; charset=utf-8", self.page)
        elif path == "/info.json":
            info = json.dumps(page_info(self.model)).encode()  # the metrics as they are now
            self._reply(HTTPStatus.OK, "application/json", info)
        elif path == "/examples.png" and (grid := latest_samples(self.model.workdir)):
            with open(grid, "rb") as f:
                self._reply(HTTPStatus.OK, "image/png", f.read())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self) -> None:  # noqa: N802
        """POST /translate: the translation of the posted image, or a 4xx saying why not."""
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path != "/translate":
                raise UploadError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            body = self._read_body()
            content_type = self.headers.get("Content-Type", "")
            reply = translate_request(self.model, body, content_type, url.query)
        except UploadError as e:
            self._error(e.status, str(e))
            return
        self._reply(HTTPStatus.OK, "application/json", json.dumps(reply).encode())

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length")
        if int(length) > MAX_UPLOAD_BYTES:
            self.close_connection = True  # the unread body must not be taken for a request
            raise UploadError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the upload is {int(length):,} bytes; at most {MAX_UPLOAD_BYTES:,}",
            )
        return self.rfile.read(int(length))

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._reply(status, "application/json", json.dumps({"error": message}).encode())

    def _reply(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


def make_handler(model: DemoModel) -> type[DemoHandler]:
    """The request handler class of a server that serves `model`."""
    return type("Handler", (DemoHandler,), dict(model=model, page=page_html()))


def make_server(model: DemoModel, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threading HTTP server for `model` bound to (host, port); port 0 picks a free one."""
    server = ThreadingHTTPServer((host, port), make_handler(model))
    server.daemon_threads = True  # a stalled client does not keep the process alive
    return server


def define_flags() -> None:
    """The command line's flags."""
    flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (default: loopback only).")
    flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
    flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
    flags.DEFINE_enum("mode", None, steps.EVAL_MODES, "Test-time mode (default: eval.mode).")
    flags.DEFINE_integer("seed", None, "Seed of the dropout keys (default: the run's seed).")
    flags.mark_flags_as_required(["workdir"])


def serve_from_flags() -> None:
    """Load the model, then serve the page until interrupted."""
    f = flags.FLAGS
    cli.start_runtime_of(f.workdir)
    model = load_model(f.workdir, f.checkpoint, f.mode, f.seed)
    server = make_server(model, f.host, f.port)
    host, port = server.server_address[:2]
    print(f"Serving {f.workdir} (step {model.step}, {model.mode} mode) on http://{host}:{port}/")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def run() -> None:
    """The command: parse the command line, serve, report bad input in one line."""
    cli.run(PROG, define_flags, serve_from_flags)


if __name__ == "__main__":
    run()
