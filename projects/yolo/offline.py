"""Run ultralytics offline, with kiln owning its settings. Import this module before anything imports ultralytics.

    python -c "from projects.yolo.offline import load_ultralytics; print(load_ultralytics().SETTINGS['mlflow'])"

ultralytics reads YOLO_CONFIG_DIR, YOLO_OFFLINE and YOLO_AUTOINSTALL when it is imported, keeps its settings in
`$YOLO_CONFIG_DIR/Ultralytics/settings.json`, and at run time would reach the network for:
- fonts: `check_font("Arial.ttf")` downloads unless the TTF sits in that config folder (we copy DejaVuSans there);
- the AMP check on CUDA: it loads `yolo26n.pt`, downloading it, to compare FP32 and FP16 detections;
- usage analytics (`sync`), the Platform callback (an API key), `pip` auto-installs and version checks.
Its MLflow callback (on by default, `SETTINGS["mlflow"]`, read per trainer in `add_integration_callbacks`)
would open its own run in its own experiment; kiln turns it off and logs through `projects.yolo.tracking`.
On CPU, ultralytics sets torch's threads to cpu_count - 1 when it picks the device, which leaves one core of a
2-core machine idle; kiln trains on every core instead (`KILN_YOLO_THREADS=N` to choose: on a CPU shared with other
jobs fewer threads can be faster; docs/benchmarks.md, "Search cost").
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

# Every integration ultralytics can load: kiln's own callbacks do the tracking, none of these may start.
INTEGRATIONS_OFF = {k: False for k in ("mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb")}
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # the names check_font() asks for (ASCII and non-ASCII class names)


def kiln_home() -> Path:
    """`$KILN_HOME`, else `<repo>/.kiln` when the checkout is writable, else `~/.cache/kiln`."""
    if os.environ.get("KILN_HOME"):
        return Path(os.environ["KILN_HOME"]).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and os.access(repo, os.W_OK):
        return repo / ".kiln"
    return Path.home() / ".cache" / "kiln"


CONFIG_DIR = kiln_home() / "ultralytics"  # YOLO_CONFIG_DIR; ultralytics adds an `Ultralytics/` level below it
USER_DIR = CONFIG_DIR / "Ultralytics"


def set_environment() -> None:
    """The variables ultralytics reads at import. Our own, not the user's: a user YOLO_CONFIG_DIR is replaced."""
    os.environ["YOLO_CONFIG_DIR"] = str(CONFIG_DIR)
    os.environ["YOLO_OFFLINE"] = "1"  # is_online() returns False without a DNS lookup
    os.environ["YOLO_AUTOINSTALL"] = "false"  # check_requirements() never runs pip
    os.environ.pop("ULTRALYTICS_API_KEY", None)  # the Platform callback starts only with a key
    USER_DIR.mkdir(parents=True, exist_ok=True)
    install_fonts(USER_DIR)


def install_fonts(folder: Path) -> None:
    """Copy matplotlib's DejaVuSans under the names ultralytics looks for, so plotting never downloads a font."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONTS:
        target = folder / name
        if not target.is_file():
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            shutil.copyfile(source, tmp)
            tmp.replace(target)  # atomic: parallel runs never see half a font


def kiln_settings(home: Path) -> dict[str, Any]:
    return {
        **INTEGRATIONS_OFF,
        "sync": False,  # no usage analytics
        "api_key": "",  # no Platform streaming
        "vscode_msg": False,
        "openvino_msg": False,
        "datasets_dir": str(home / "datasets"),
        "weights_dir": str(home / "weights"),
        "runs_dir": str(home / "runs"),
    }


def apply_settings(ultralytics_utils: ModuleType) -> None:
    """Write kiln's settings into ultralytics' settings file, or only into memory if ultralytics was imported
    before this module and so reads some other user's settings file we have no business rewriting."""
    settings = ultralytics_utils.SETTINGS
    wanted = kiln_settings(CONFIG_DIR)
    if Path(ultralytics_utils.USER_CONFIG_DIR) == USER_DIR:
        if any(settings.get(k) != v for k, v in wanted.items()):
            settings.update(wanted)
    else:
        dict.update(settings, wanted)
        install_fonts(Path(ultralytics_utils.USER_CONFIG_DIR))


def offline_check_amp(model: Any) -> bool:
    """ultralytics' check_amp without the download: run its check only when its reference weights are already
    on disk; otherwise trust AMP on CUDA except on the GPUs ultralytics knows to produce NaNs."""
    import torch
    from ultralytics.utils import WEIGHTS_DIR, checks

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False  # AMP is only used on CUDA
    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        return bool(checks.check_amp(model))
    name = torch.cuda.get_device_name(device).lower()
    bad = ("1660", "1650", "1630", "t400", "t550", "t600", "t1000", "t1200", "t2000", "k40m")
    return not any(b in name for b in bad)


def cpu_threads() -> int:
    """Torch threads for training on CPU: KILN_YOLO_THREADS when set (> 0), else every core."""
    raw = os.environ.get("KILN_YOLO_THREADS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            from core.errors import SettingsError

            raise SettingsError(f"KILN_YOLO_THREADS={raw!r} is not a positive whole number of threads")
        return int(raw)
    return os.cpu_count() or 1


def load_ultralytics() -> ModuleType:
    """Import ultralytics with kiln's offline settings in force, and patch out the AMP check's download."""
    set_environment()
    import ultralytics
    import ultralytics.engine.trainer as trainer_module
    import ultralytics.utils as ultralytics_utils
    import ultralytics.utils.torch_utils as torch_utils

    apply_settings(ultralytics_utils)
    torch_utils.NUM_THREADS = cpu_threads()  # select_device("cpu") sets torch's threads from it
    trainer_module.check_amp = offline_check_amp  # the trainer imported check_amp by name
    module: ModuleType = ultralytics
    return module


set_environment()
