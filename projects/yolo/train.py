"""Train a YOLO detector on ultralytics inside one MLflow run, then export, check and register it as ONNX.

    mlflow run . -e safety_detection --env-manager local -P epochs=30 -P imgsz=320
    python -m projects.yolo.train --preset visitor_detection --epochs 3 --imgsz 160
    python -m projects.yolo.train --preset yolo_custom --data my/data.yaml --model yolo11s.yaml

Presets: safety_detection (smoke, fire, person_down; yolov8n.yaml), visitor_detection (person, package;
yolo11n.yaml) and yolo_custom (any dataset YAML). With no `--data`, the first two train on their bundled
sample set (`kiln data sample`). Training never touches the network (see `projects.yolo.offline`).

`--resume RUN` continues a killed run from its weights/last.pt with ultralytics' own resume, in the same run. A run
that finished training (ultralytics strips last.pt's optimizer and marks it epoch -1 when it ends, pruned or not)
has nothing left to train: its weights/best.pt is exported and registered from that run instead, with the metrics
of ultralytics' final validation of it that the run already holds. kiln tune and kiln cv register a trial or fold
this way (`experiments.runs.finish_in_run`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml

from core import vocab
from core.contract import DetectionPost, ModelContract
from core.errors import UserError
from data.versions import log_dataset_version
from data.yolo_layout import YoloDataset
from data.yolo_validate import Report
from projects.common import augment, console, registration, tracking
from projects.common.callbacks import EpochListener, figures_wanted, wants_export
from projects.common.checkpoint import ResumeError
from projects.common.config import entry_point
from projects.common.onnx_export import check_onnx, export_onnx, log_onnx_model
from projects.common.runtime import pick_device
from projects.yolo import console as yolo_console
from projects.yolo import data as yolo_data
from projects.yolo.config import FAMILY as FAMILY
from projects.yolo.config import PRESETS as PRESETS
from projects.yolo.config import RANKING as RANKING
from projects.yolo.config import Preset as Preset
from projects.yolo.config import YoloConfig as YoloConfig
from projects.yolo.config import family_preset as family_preset
from projects.yolo.config import get_preset as get_preset
from projects.yolo.config import register_preset as register_preset
from projects.yolo.model import ModelSpec, export_module, load_model, raw_predictions, resolve_model
from projects.yolo.offline import load_ultralytics
from projects.yolo.tracking import PLOT_SUFFIXES, MlflowBridge

load_ultralytics()

from ultralytics.cfg import check_cfg  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils import DEFAULT_CFG_KEYS  # noqa: E402

ONNX_RTOL, ONNX_ATOL = 1e-3, 1e-3  # boxes are in input pixels (0..imgsz), so 1e-3 relative is sub-pixel
CHECK_IMAGES = 2  # real validation images run through both PyTorch and ONNX Runtime


# Set through kiln's own flags (or by kiln itself); a --hyp file may not override them.
KILN_OWNED_ARGS = frozenset(
    {"model", "data", "epochs", "imgsz", "batch", "patience", "lr0", "optimizer", "seed", "device", "time", "workers",
     "save_dir", "resume", "project", "name", "exist_ok", "mode", "task", "pretrained", "verbose"}
)  # fmt: skip


@dataclass
class Prepared:
    """Everything checked and resolved before a run starts."""

    preset: Preset
    model: ModelSpec
    dataset: YoloDataset
    labels: Report  # the label check: boxes per class, background images
    work: Path  # scratch folder: resolved data.yaml and ultralytics' save_dir
    data_yaml: Path
    model_name: str
    hyp: dict[str, Any]  # extra ultralytics args from --hyp, checked


def check_numbers(cfg: YoloConfig) -> None:
    positive: dict[str, float] = {"epochs": cfg.epochs, "imgsz": cfg.imgsz, "batch": cfg.batch}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"--{name} must be > 0, got {value}")
    for name, value in {"patience": cfg.patience, "lr0": cfg.lr0, "time": cfg.time, "workers": cfg.workers}.items():
        if value < 0:
            raise UserError(f"--{name} must be >= 0, got {value}")


def read_hyp(path: str) -> dict[str, Any]:
    """Extra ultralytics train args from a YAML file, checked against ultralytics' own names and types."""
    if not path:
        return {}
    hyp_path = Path(path).expanduser()
    if not hyp_path.is_file():
        raise UserError(f"--hyp file not found: {hyp_path}")
    try:
        loaded = yaml.safe_load(hyp_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{hyp_path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{hyp_path}: expected a mapping of ultralytics arg: value")
    unknown = sorted(set(loaded) - set(DEFAULT_CFG_KEYS))
    if unknown:
        raise UserError(f"{hyp_path}: unknown ultralytics args {unknown}")
    owned = sorted(set(loaded) & KILN_OWNED_ARGS)
    if owned:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in owned)
        raise UserError(f"{hyp_path}: {owned} are set by kiln; use {flags} instead")
    try:
        check_cfg(dict(loaded))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{hyp_path}: {exc}") from None
    return loaded


def ultralytics_device(pref: str, nproc: int = 1) -> str:
    """kiln's device names -> ultralytics' ('cpu', '0', '1', ...); `nproc` > 1 -> the device list '0,1,...' that
    makes ultralytics train data-parallel (its own DDP, on CUDA only)."""
    if nproc < 1:
        raise UserError(f"nproc must be >= 1, got {nproc}")
    if nproc > 1:
        return _device_list(pref, nproc)
    device = pick_device(pref)
    return "cpu" if device.type == "cpu" else str(device.index or 0) if device.type == "cuda" else device.type


def _device_list(pref: str, nproc: int) -> str:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if pref.strip().lower() == "cpu" or gpus < nproc:
        raise UserError(
            f"nproc {nproc}: ultralytics trains data-parallel on CUDA GPUs only, and this machine has {gpus} "
            f"(device={pref!r}); use nproc=1 here"
        )
    return ",".join(str(i) for i in range(nproc))


def prepare(cfg: YoloConfig) -> Prepared:
    """Check every input; raises a UserError naming the bad file or value before anything trains."""
    preset = get_preset(cfg.preset)
    check_numbers(cfg)
    hyp = {**augment.ultralytics_args(augment.parse_augment(cfg.augment)), **read_hyp(cfg.hyp)}
    model = resolve_model(cfg.model or preset.model)
    dataset = yolo_data.resolve_dataset(cfg.data, preset.sample)
    report = yolo_data.check_labels(dataset)
    work = Path(tempfile.mkdtemp(prefix="kiln-yolo-"))
    data_yaml = yolo_data.write_resolved_yaml(dataset, work)
    return Prepared(preset, model, dataset, report, work, data_yaml, cfg.model_name or preset.name, hyp)


def trainer_args(cfg: YoloConfig, prep: Prepared) -> dict[str, Any]:
    args: dict[str, Any] = {
        **prep.hyp,
        "model": prep.model.source,
        "data": str(prep.data_yaml),
        "epochs": cfg.epochs,
        "imgsz": cfg.imgsz,
        "batch": cfg.batch,
        "patience": cfg.patience,  # 0 disables ultralytics' EarlyStopping
        "optimizer": cfg.optimizer if cfg.optimizer != "auto" or not cfg.lr0 else "SGD",
        "seed": cfg.seed,
        "device": ultralytics_device(cfg.device, cfg.nproc),
        "workers": cfg.workers,
        "save_dir": str(prep.work / "train"),
        "exist_ok": True,
        "pretrained": prep.model.kind == "weights",
        "plots": figures_wanted(),  # ultralytics' figures, not for a kiln tune trial or kiln cv fold
        "verbose": True,
    }
    if cfg.lr0:
        args["lr0"] = cfg.lr0
    if cfg.time:
        args["time"] = cfg.time
    return args


def fetch_resume_state(run_id: str, save_dir: Path) -> Path:
    """Download the run's last.pt (and best.pt, results.csv) into ultralytics' save_dir; return last.pt.
    ResumeError, naming the run, when it has no last.pt."""
    weights = save_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="weights/last.pt", dst_path=str(save_dir)
        )
    except Exception as exc:  # MlflowException or OSError, depending on the artifact store
        raise ResumeError(f"cannot resume run {run_id!r}: no artifact 'weights/last.pt' ({exc})") from None
    last = Path(local)
    for extra in ("weights/best.pt", "results.csv"):
        try:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=extra, dst_path=str(save_dir))
        except Exception:  # an early crash leaves no best.pt / results.csv yet; training recreates them
            continue
    return last


def finished_training(last: Path) -> bool:
    """Whether a last.pt has no epoch left: ultralytics marks it epoch -1 when training ends (and strips its
    optimizer); a last.pt of the final epoch is from a run killed during its final validation."""
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    epoch, epochs = int(ckpt.get("epoch", -1)), int((ckpt.get("train_args") or {}).get("epochs", 0))
    return epoch < 0 or epoch + 1 >= epochs


class KilnDetectionTrainer(DetectionTrainer):  # type: ignore[misc]  # ultralytics is untyped (Any)
    """ultralytics' trainer, printing its model layer table only with --verbose."""

    show_layers = False

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
        return super().get_model(cfg, weights, verbose=yolo_console.layer_table(self.show_layers, verbose))


def build_trainer(cfg: YoloConfig, prep: Prepared, last: Path | None = None) -> DetectionTrainer:
    """ultralytics' trainer; `last` (a killed run's last.pt, from `fetch_resume_state`) resumes it."""
    args = trainer_args(cfg, prep)
    if last is not None:
        args["resume"] = str(last)
    yolo_console.configure()
    with yolo_console.quiet(not cfg.verbose):  # the trainer logs every resolved arg as it is built
        trainer = KilnDetectionTrainer(overrides=args)
    trainer.show_layers = cfg.verbose
    return trainer


def log_run_context(prep: Prepared) -> None:
    profile = yolo_data.dataset_profile(prep.dataset, prep.labels)
    source = str(prep.dataset.yaml_path or prep.dataset.root)
    name = prep.dataset.root.name if prep.dataset.yaml_path is None else prep.dataset.yaml_path.parent.name
    tracking.log_dataset(source, yolo_data.dataset_digest(prep.dataset), name, profile=profile)
    log_dataset_version(prep.dataset.yaml_path)  # data=dataset:NAME@vN: the exact version, as a run input too
    mlflow.log_artifact(str(prep.data_yaml), artifact_path="dataset")
    model_yaml = prep.model.source if prep.model.kind == "yaml" else ""
    tracking.tag_family("yolo", RANKING, preset=prep.preset.name, model_yaml=model_yaml, baseline="0",
                        baseline_kind="a detector that finds nothing")  # fmt: skip


def contract(names: list[str], imgsz: int) -> ModelContract:
    """The detection contract: letterboxed RGB in, ultralytics' raw [B, 4+nc, N] head out (the server runs NMS)."""
    post = DetectionPost(names=tuple(names), conf=0.25, iou=0.45, box_format="xywh", nms=False, layout="[B,4+nc,N]")
    pre = yolo_data.model_input(imgsz)
    return ModelContract(task="detection", family="yolo", preprocess=pre, postprocess=post, ranking=RANKING)


def export_and_register(prep: Prepared, best: Path, imgsz: int, register: bool = True) -> int | None:
    """Export best.pt, check ONNX against PyTorch on real validation images, log and (when `register`) register
    it. Returns the version, None when not registered."""
    trained = load_model(best)
    module = export_module(trained)
    images = yolo_data.read_images(prep.dataset.splits["val"][:CHECK_IMAGES])
    batch = torch.from_numpy(yolo_data.to_input(images, imgsz))
    path = export_onnx(
        module, batch[:1], prep.work / "model.onnx", dynamic_hw=False, input_name="images", output_name="output0"
    )
    diff = check_onnx(path, module, batch, rtol=ONNX_RTOL, atol=ONNX_ATOL)
    # The fused export module must also agree with the model exactly as trained (unfused, tuple output).
    unfused_diff = float((raw_predictions(trained, batch) - raw_predictions(module, batch)).abs().max())
    registration.bookkeeping(onnx_max_abs_diff=diff, fuse_max_abs_diff=unfused_diff)
    version = log_onnx_model(
        path, input_example=batch[:1].numpy(), model_name=prep.model_name,
        contract=contract(prep.dataset.names, imgsz), register=register,
    )  # fmt: skip
    return int(version.version) if version is not None else None


def finish(cfg: YoloConfig, prep: Prepared, trainer: DetectionTrainer, bridge: MlflowBridge) -> dict[str, float]:
    final = {k.replace("metrics/", "best/"): v for k, v in bridge.final.items() if k.startswith("metrics/")}
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    imgsz = int(trainer.args.imgsz)
    return register_best(cfg, prep, best, imgsz, final, bridge.epochs_logged, wants_export(bridge.stop_request))


def register_best(
    cfg: YoloConfig, prep: Prepared, best: Path, imgsz: int, final: dict[str, float], epochs_run: int, allowed: bool
) -> dict[str, float]:
    """The end of a run, trained now or before: export `best` and register it under the shared decision."""
    registration.bookkeeping(epochs_run=epochs_run)
    outcome = registration.export_and_register(
        cfg.register, RANKING, final, prep.model_name,
        lambda register: export_and_register(prep, best, imgsz, register), allowed=allowed,
    )  # fmt: skip
    final["epochs_run"] = epochs_run
    if outcome.version is not None:
        final["registered_version"] = outcome.version
    ap50, ap = final.get("best/mAP50", float("nan")), final.get("best/mAP50-95", float("nan"))
    tracking.set_note(
        f"{prep.preset.name} ({prep.model.source}): best mAP50 {ap50:.3f}, mAP50-95 {ap:.3f} "
        f"after {epochs_run} epochs; {outcome.note}"
    )
    return final


def finish_trained_run(cfg: YoloConfig, prep: Prepared, last: Path) -> dict[str, float]:
    """Export and register a run that finished training (`cfg.resume`), from the weights/best.pt it logged (beside
    `last`, its downloaded last.pt, which stands in when no epoch improved), with the `best/...` metrics of
    ultralytics' final validation of them."""
    best = last.with_name("best.pt") if last.with_name("best.pt").is_file() else last
    args = torch.load(best, map_location="cpu", weights_only=False).get("train_args") or {}
    run = mlflow.MlflowClient().get_run(cfg.resume)
    final = {k: v for k, v in run.data.metrics.items() if k.startswith("best/")}
    epochs_run = int(run.data.tags.get(vocab.EPOCHS_RUN) or 0)
    print(f"Run {cfg.resume} finished training: exporting its {best.name}, no epoch trained", flush=True)
    imgsz = int(args.get("imgsz") or cfg.imgsz)
    if figures_wanted():
        log_validation_figures(cfg, prep, best, imgsz)
    return register_best(cfg, prep, best, imgsz, final, epochs_run, wants_export(None))


def log_validation_figures(cfg: YoloConfig, prep: Prepared, best: Path, imgsz: int) -> None:
    """ultralytics' figures of `best` on the val set (confusion matrix, PR/F1 curves, val batches with predicted
    boxes), which a kiln tune trial or kiln cv fold did not draw: one validation pass, no training."""
    from ultralytics import YOLO

    yolo_console.configure()
    with yolo_console.quiet(not cfg.verbose):
        result = YOLO(str(best)).val(
            data=str(prep.data_yaml), imgsz=imgsz, batch=cfg.batch, device=ultralytics_device(cfg.device),
            workers=0, plots=True, project=str(prep.work), name="figures", exist_ok=True, verbose=False,
        )  # fmt: skip
    for path in sorted(Path(result.save_dir).iterdir()):
        if path.suffix in PLOT_SUFFIXES:
            mlflow.log_artifact(str(path), artifact_path="plots")


def train(cfg: YoloConfig, listeners: tuple[EpochListener, ...] = ()) -> dict[str, float]:
    """Check inputs, train in the MLflow run, export and register; returns the final metrics."""
    registration.check_mode(cfg.register)
    ultralytics_device(cfg.device, cfg.nproc)  # a device list this machine cannot give fails before any run
    prep = prepare(cfg)
    try:
        final, url = _train_in_run(cfg, prep, listeners)
    finally:
        shutil.rmtree(prep.work, ignore_errors=True)  # everything worth keeping is in the run by now
    ap50, ap = final.get("best/mAP50", float("nan")), final.get("best/mAP50-95", float("nan"))
    version = int(final["registered_version"]) if "registered_version" in final else None
    print(f"best mAP50 {ap50:.4f}, mAP50-95 {ap:.4f} (a detector that finds nothing: 0) -> "
          + (f"registered {prep.model_name} v{version}" if version is not None else "not registered"))  # fmt: skip
    console.footer(url, prep.model_name, version)
    return final


def _train_in_run(
    cfg: YoloConfig, prep: Prepared, listeners: tuple[EpochListener, ...] = ()
) -> tuple[dict[str, float], str]:
    run_name = f"{prep.preset.name}-{Path(prep.model.source).stem}"
    save_dir = prep.work / "train"
    last = fetch_resume_state(cfg.resume, save_dir) if cfg.resume else None  # fails before the run reopens
    if last is not None and finished_training(last):
        with tracking.start_run(resume_run_id=cfg.resume):
            return finish_trained_run(cfg, prep, last), console.active_run_url()
    trainer = build_trainer(cfg, prep, last)
    with tracking.start_run(run_name=run_name, resume_run_id=cfg.resume or None):
        bridge = MlflowBridge(
            prep.dataset.names,
            config=cfg,
            extra_params=tracking.kiln_tags(model_source=prep.model.source),
            listeners=listeners,
        )
        bridge.attach(trainer)
        images = sum(len(v) for v in prep.dataset.splits.values())
        data_text = f"{prep.dataset.root.name} ({images} images, classes {', '.join(prep.dataset.names)})"
        console.header("yolo", f"{prep.preset.name}, {prep.model.source}", data_text, trainer.args.device or "cpu")
        log_run_context(prep)
        trainer.train()
        return finish(cfg, prep, trainer, bridge), console.active_run_url()


main = entry_point(YoloConfig, train, "Train a YOLO detector on ultralytics, tracked in MLflow; register it as ONNX.")


def smoke(folder: Path) -> dict[str, Any]:
    """Eight generated 64 px safety images, one epoch at imgsz 64 on the CPU: the registry's smoke test."""
    from data.samples import SampleRequest, make_sample

    data = make_sample("safety", SampleRequest(folder / "safety", count=8, size=64, val=0.25))
    return {
        "data": str(data),
        "epochs": 1,
        "imgsz": 64,
        "batch": 4,
        "device": "cpu",
        "workers": 0,
        "register": "always",
    }


if __name__ == "__main__":
    main()
