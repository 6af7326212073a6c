"""Run a registered model with its family's pre- and post-processing, without HTTP: the model object the
server, the shadow, the auto-labeller and distillation share.

    python -m serving.runtime.predictor models:/edgnet@production part.png [more.png ...]
    python -c "from serving.runtime.predictor import Predictor; p = Predictor.load('models:/skin/3'); \
print(p.predict_records([{'age': 41, 'bmi': 27.1}]).to_json())"

`Predictor.load` takes `models:/NAME@ALIAS`, `models:/NAME/VERSION`, a local `.onnx` file (the contract is read
from its metadata_props) or a local MLflow model folder, and opens an onnxruntime session with the server's
options (serving/runtime/runtime.py). Predictions come back typed (serving/runtime/postprocess.py): masks and
boxes in the original image's pixels, class names from the contract, and `.to_json()` giving the task endpoint's body.
The server's task endpoint calls the same `prepare_*` / `finish_*` steps, with its batcher in between.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.contract import ModelContract
from core.errors import KilnError
from core.preprocess import Geometry
from serving.deployment.artifacts import (
    ModelsUri,
    download,
    input_example,
    onnx_file,
    onnx_metadata,
    parse_models_uri,
    reason,
    registry_client,
)
from serving.errors import BadRequest, ModelSourceError
from serving.runtime import runtime
from serving.runtime.imaging import DECODE_BUDGET, decode_for_model, decode_image, decode_limit
from serving.runtime.postprocess import (
    Feeds,
    ImageResult,
    ImageTask,
    Params,
    Tabular,
    TabularResults,
    Task,
    get_task,
)
from serving.runtime.tensors import TensorSpec

DEFAULT_BATCH = 8  # images per session run in predict_images


class Predictor:
    """One ONNX model version with an open session, its contract and its task's pre- and post-processing."""

    def __init__(
        self,
        session: Any,
        contract: ModelContract,
        *,
        name: str,
        version: str | None = None,
        run_id: str | None = None,
        source: str = "",
        threads: int = 0,
    ) -> None:
        """Wrap an open `ort.InferenceSession`; raises ValueError when its tensors do not fit the contract."""
        self.session = session
        self.contract = contract
        self.name = name
        self.version = version
        self.run_id = run_id
        self.source = source or name
        self.threads = threads
        self.inputs = tuple(TensorSpec.from_ort(n) for n in session.get_inputs())
        self.outputs = tuple(TensorSpec.from_ort(n) for n in session.get_outputs())
        self.task: Task | None = get_task(contract.task) if contract.task is not None else None
        if self.task is not None:
            self.task.check_io(contract, self.inputs, self.outputs)

    # --- loading ------------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls, source: str | Path, *, tracking_uri: str | None = None, session_options: Any | None = None
    ) -> Predictor:
        """Load from `models:/NAME@ALIAS`, `models:/NAME/VERSION`, an `.onnx` file or an MLflow model folder.

        Args:
            tracking_uri: the registry for `models:/` sources; MLflow's default (MLFLOW_TRACKING_URI) when None.
            session_options: an `ort.SessionOptions`; the server's options (runtime.session_options) when None.

        Raises:
            ModelSourceError: naming the source and what is wrong with it.
        """
        text = str(source)
        try:
            uri = parse_models_uri(text)
            if uri is not None:
                return cls._from_registry(uri, text, tracking_uri, session_options)
            path = Path(text).expanduser()
            if path.is_file() and path.suffix == ".onnx":
                return cls.from_onnx(path, session_options=session_options, source=text)
            if path.is_dir() and (path / "MLmodel").is_file():
                return cls.from_onnx(onnx_file(path), session_options=session_options, source=text)
        except ModelSourceError:
            raise
        except ValueError as err:  # a malformed models:/ URI, a model folder without an onnx flavor, a contract
            raise ModelSourceError(f"cannot load {text}: {reason(err)}", status_code=400) from err
        except Exception as err:
            raise ModelSourceError(f"cannot load {text}: {reason(err)}") from err
        if not path.exists():
            raise ModelSourceError(f"cannot load {text}: no such file or folder, and not a models:/ URI")
        raise ModelSourceError(
            f"cannot load {text}: expected models:/NAME@ALIAS, models:/NAME/VERSION, an .onnx file "
            "or an MLflow model folder (with an MLmodel file)",
            status_code=400,
        )

    @classmethod
    def from_onnx(
        cls,
        path: Path,
        *,
        name: str | None = None,
        version: str | None = None,
        run_id: str | None = None,
        session_options: Any | None = None,
        contract: ModelContract | None = None,
        source: str = "",
    ) -> Predictor:
        """Open `path`; the contract is read from its metadata_props unless given."""
        contract = contract if contract is not None else ModelContract.parse(onnx_metadata(path))
        options = session_options or runtime.session_options(runtime.default_threads(contract))
        session = runtime.open_session(path, options)
        return cls(
            session,
            contract,
            name=name or contract.model_name or path.stem,
            version=version,
            run_id=run_id or contract.run_id,
            source=source or str(path),
            threads=runtime.session_threads(options),
        )

    @classmethod
    def _from_registry(
        cls, uri: ModelsUri, source: str, tracking_uri: str | None, session_options: Any | None
    ) -> Predictor:
        from mlflow.exceptions import MlflowException

        client = registry_client(tracking_uri)
        try:
            if uri.alias is not None:
                version = str(client.get_model_version_by_alias(uri.name, uri.alias).version)
            else:
                version = str(client.get_model_version(uri.name, uri.version).version)
        except MlflowException as err:
            raise ModelSourceError(f"cannot load {source}: {err.message}") from None
        predictor, _ = cls.from_registry(
            client, uri.name, version, tracking_uri=tracking_uri, options=session_options, source=source, example=False
        )
        return predictor

    @classmethod
    def from_registry(
        cls, client: Any, name: str, version: str, *, tracking_uri: str | None,
        options: Any | Callable[[ModelContract], Any] | None = None, folder: str | None = None,
        source: str = "", example: bool = True, step: Callable[[str], None] = lambda _: None,
    ) -> tuple[Predictor, Any]:  # fmt: skip
        """The one loader of a registered version: `Predictor.load("models:/...")` and the server's load pipeline
        (serving/deployment/loading.py) both call it. Downloads the version into a temporary folder (under
        `folder`), reads its contract, opens the session and, with `example`, reads the logged input example
        before the files go (the session holds the weights once open).

        Args:
            options: an `ort.SessionOptions`, or a function of the contract that makes one; None = the server's.
            step: told the name of each step as it starts (download, contract, open), for timings and errors.

        Returns:
            The predictor and the version's input example (None when it has none or `example` is False).
        """
        directory = Path(tempfile.mkdtemp(prefix=f"kiln-{name}-v{version}-", dir=folder))
        try:
            step("download")
            local = download(client, name, version, directory, tracking_uri)
            path = onnx_file(local)
            step("contract")
            contract = ModelContract.parse(onnx_metadata(path))
            step("open")
            if callable(options):
                options = options(contract)
            options = options or runtime.session_options(runtime.default_threads(contract))
            session = runtime.open_session(path, options)
            step("contract")
            run_id = client.get_model_version(name, version).run_id
            predictor = cls(
                session, contract, name=name, version=version, run_id=run_id,
                source=source or f"models:/{name}/{version}", threads=runtime.session_threads(options),
            )  # fmt: skip
            return predictor, input_example(local) if example else None
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    # --- raw runs -----------------------------------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    # Image runs over this many pixels (N*H*W) give onnxruntime's arena back afterwards; 0 = never. The server
    # sets it to a full batch at the model's own size (RequestLimits), so only unusually large runs shrink.
    shrink_above_pixels: int = 0

    def run(self, feeds: Feeds) -> Feeds:
        """One session run: input name -> array in, output name -> array out."""
        options = None
        if self.shrink_above_pixels and _pixels(feeds) > self.shrink_above_pixels:
            options = runtime.shrink_arena_options()
        results = self.session.run(None, feeds, options)
        return {spec.name: np.asarray(value) for spec, value in zip(self.outputs, results, strict=True)}

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """A batch for the model's one input -> its first output for the batch, with no pre- or post-processing."""
        if len(self.inputs) != 1:
            raise BadRequest(f"{self.source} has inputs {self.input_names}; use run() with one array per input")
        spec = self.inputs[0]
        array = np.asarray(x).astype(spec.dtype, copy=False)
        if array.ndim != len(spec.shape):
            raise BadRequest(f"{self.source}: input {spec.name!r} expects shape {spec.wire_shape}, got {array.shape}")
        chunks = [array[i : i + 1] for i in range(len(array))] if spec.shape[0] == 1 else [array]
        first = self.outputs[0].name
        return np.concatenate([self.run({spec.name: chunk})[first] for chunk in chunks], axis=0)

    # --- images -------------------------------------------------------------------------------------------

    def predict_images(
        self, images: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH, **options: float
    ) -> list[ImageResult]:
        """Decoded images (uint8 HxW gray or HxWx3 BGR, as cv2.imread gives them) -> one result each.

        Options are the task endpoint's query parameters: `threshold` (segmentation), `conf`, `iou`, `max_det`
        (detection); each defaults to the contract's value.
        """
        task = self._image_task()
        params = task.check_params(options)
        if self.inputs[0].shape[0] is not None:  # a graph exported with a fixed batch size
            batch_size = self.inputs[0].shape[0] or 1
        results: list[ImageResult] = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = [_as_image(start + i, im) for i, im in enumerate(images[start : start + batch_size])]
            prepared = [self.prepare_image(im) for im in chunk]
            feeds = {self.inputs[0].name: np.concatenate([f[self.inputs[0].name] for f, _ in prepared], axis=0)}
            outputs = self.run(feeds)
            results += [self.finish_image(outputs, g, params, row=i) for i, (_, g) in enumerate(prepared)]
        return results

    def predict_bytes(self, blobs: Sequence[bytes], **options: Any) -> list[ImageResult]:
        """Encoded image files (PNG, JPEG, ...) -> one result each; undecodable bytes raise BadRequest."""
        return self.predict_images([decode_image(b) for b in blobs], **options)

    def prepare_image(self, image: np.ndarray) -> tuple[Feeds, Geometry]:
        """One decoded image -> the feeds of a one-row run, and the geometry to map results back."""
        task = self._image_task()
        spec = self.inputs[0]
        tensor, geometry = task.prepare(self.contract, spec, image)
        return {spec.name: tensor}, geometry

    def prepare_bytes(self, data: bytes) -> tuple[Feeds, Geometry]:
        """An upload, decoded no larger than this model needs (imaging.decode_for_model: 413 past the model's
        limit, JPEGs reduced by the decoder), -> feeds and the geometry in the upload's own pixels."""
        size = self.contract.preprocess.size if self.contract.preprocess is not None else None
        image, (height, width) = decode_for_model(data, decode_limit(size), size)
        feeds, g = self.prepare_image(image)
        if (g.height, g.width) == (height, width):
            return feeds, g
        gain_y, gain_x = g.gain_y * g.height / height, g.gain_x * g.width / width
        return feeds, dataclasses.replace(g, height=height, width=width, gain_y=gain_y, gain_x=gain_x)

    def finish_image(self, outputs: Feeds, geometry: Geometry, params: Params, row: int = 0) -> ImageResult:
        """Row `row` of a run's outputs -> that image's result (params already checked by check_params). A map
        answer (a mask at the upload's size) holds its pixels in the process's decode budget while it is made."""
        task = self._image_task()
        pixels = geometry.height * geometry.width if task.name == "segmentation" else 0
        with DECODE_BUDGET.hold(pixels):
            return task.finish(self.contract, outputs[self.outputs[0].name][row], geometry, params)

    # --- records ------------------------------------------------------------------------------------------

    def predict_records(self, records: list[dict[str, Any]]) -> TabularResults:
        """Records ({feature: number | bool | None}) -> a label and probabilities each (or a value each)."""
        feeds, rows = self.prepare_records(records)
        return self.finish_records(self.run(feeds), rows)

    def prepare_records(self, payload: Any) -> tuple[Feeds, int]:
        """A list of records, or `{"records": [...]}` -> the feeds of one run and its row count."""
        task = self._tabular_task()
        spec = self.inputs[0]
        matrix = task.prepare(self.contract, spec, payload)
        return {spec.name: matrix}, len(matrix)

    def finish_records(self, outputs: Feeds, rows: int) -> TabularResults:
        return self._tabular_task().finish(self.contract, self.outputs, outputs, rows)

    # --- tensors --------------------------------------------------------------------------------------------

    def finish_tensors(self, feeds: Feeds, outputs: Feeds) -> ImageResult | TabularResults | None:
        """The typed result of a run on tensors as a client sent them (KServe V2, /invocations): every row for
        a tabular model, row 0 for an image model (the tensor is taken as the image: no resize to undo), None
        for a model without a task."""
        first = next(iter(feeds.values()))
        if isinstance(self.task, Tabular):
            return self.finish_records(outputs, int(first.shape[0]) if first.ndim else 1)
        if isinstance(self.task, ImageTask) and first.ndim == 4:
            height, width = int(first.shape[2]), int(first.shape[3])
            geometry = Geometry(height, width, 1.0, 1.0, 0, 0, height, width)
            return self.finish_image(outputs, geometry, self.task.check_params({}))
        return None

    # --- helpers ------------------------------------------------------------------------------------------

    def _image_task(self) -> ImageTask:
        if not isinstance(self.task, ImageTask):
            raise BadRequest(
                f"{self.source} is a {self._kind()} model; images need a segmentation, detection or regression model"
            )
        return self.task

    def _tabular_task(self) -> Tabular:
        if not isinstance(self.task, Tabular):
            raise BadRequest(f"{self.source} is a {self._kind()} model; records need a tabular model")
        return self.task

    def _kind(self) -> str:
        return self.contract.task or "generic (no kiln.task)"

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, version={self.version!r}, task={self.contract.task!r})"


def _pixels(feeds: Feeds) -> int:
    return sum(int(a.shape[0]) * int(a.shape[2]) * int(a.shape[3]) for a in feeds.values() if a.ndim == 4)


def _as_image(i: int, image: Any) -> np.ndarray:
    """Image `i` as uint8 HxW or HxWx3 BGR; anything else is a BadRequest naming it."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise BadRequest(f"image {i} has dtype {array.dtype}; uint8 pixels expected (as cv2.imread gives them)")
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        return np.asarray(cv2.cvtColor(array, cv2.COLOR_BGRA2BGR))
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3):
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise BadRequest(f"image {i} is empty: shape {array.shape}")
        return array
    raise BadRequest(f"image {i} has shape {array.shape}; HxW gray or HxWx3 BGR expected")


def main(argv: list[str]) -> None:
    """Load a model and print the task endpoint's JSON for each image file given."""
    import json

    if len(argv) < 2:
        sys.exit("usage: python -m serving.runtime.predictor SOURCE IMAGE [IMAGE ...]")
    try:
        predictor = Predictor.load(argv[0])
        results = predictor.predict_bytes([Path(p).read_bytes() for p in argv[1:]])
    except (KilnError, OSError) as err:
        sys.exit(f"Error: {getattr(err, 'message', err)}")
    for path, result in zip(argv[1:], results, strict=True):
        body = result.to_json()
        body.pop("mask_png", None)  # base64 PNG: not for a terminal
        print(path, json.dumps(body))


if __name__ == "__main__":
    from core.scripts import script_args

    main(
        script_args(
            sys.argv[1:], "python -m serving.runtime.predictor SOURCE IMAGE [IMAGE ...]", __doc__, range(2, 1000)
        )
    )
