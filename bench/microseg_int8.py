"""int8 against fp32 on this CPU: speed-up and IoU drop for trained edgnet and microseg models and the bench UNet.

    OMP_NUM_THREADS=1 python bench/microseg_int8.py /tmp/microseg-measure [--unet-images 16]

Runs `efficiency.optimize.optimize` (static QDQ int8, calibrated on the model's own training images) on:
- every `edgnet_<set>@production` teacher and the seed-0 `microseg_<variant>_<set>` v1 models in the store the
  study wrote, evaluated on each set's held-out test images (seed 1000000, never trained on);
- the bench UNet (bench/benchmodels.py: edgnet_large at base 32, 7.76M parameters, 256 px, random weights),
  registered here and evaluated on 16 generated drawings. Its weights are untrained, so its IoU against the
  drawings' masks is near chance; the drop still says how far int8 moves its masks.
Latency is the p50 of batch-1 runs with the server's session options, fp32 and int8 interleaved in two rounds.
Writes int8.json into the folder and prints a markdown table.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _bench_unet(folder: Path, images: int) -> tuple[str, int, Path, Path]:
    import mlflow
    import numpy as np
    from benchmodels import IMAGE_SIZE, unet  # type: ignore[import-not-found]

    from data.drawings import generate
    from projects.common import tracking
    from projects.common.onnx_export import log_onnx_model

    evaluation = generate(folder / "unet-eval", count=images, size=IMAGE_SIZE, seed=7)
    calibration = generate(folder / "unet-calib", count=images, size=IMAGE_SIZE, seed=8)
    path, example, contract = unet()
    with mlflow.start_run(run_name="bench-unet"):
        tracking.log_dataset(str(calibration), "0" * 16, "drawings")
        version = log_onnx_model(path, input_example=np.asarray(example), model_name="bench_unet", contract=contract)
    return "bench_unet", int(version.version), evaluation, calibration


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--sets", default="seg_objects,seg_polyps,seg_leaves,seg_cracks,seg_damage", show_default=True)
@click.option("--microseg", default="micronet,hwnet,mininet", show_default=True, help="variants; '' for none")
@click.option("--img-size", default=64, show_default=True)
@click.option("--unet-images", default=16, show_default=True)
def main(folder: Path, sets: str, microseg: str, img_size: int, unet_images: int) -> None:
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    sys.path.insert(0, str(REPO / "bench"))
    from mlflow import MlflowClient

    from data.segsets import ensure_segset
    from efficiency.optimize import optimize
    from projects.microseg.train import TEST_SEED

    client = MlflowClient()
    jobs = []
    for name in sets.split(","):
        test = ensure_segset(name, 40, img_size, TEST_SEED)
        teacher = client.get_model_version_by_alias(f"edgnet_{name}", "production")
        jobs.append((f"edgnet_{name}", int(teacher.version), test, None))
        for variant in filter(None, microseg.split(",")):
            jobs.append((f"microseg_{variant}_{name}", 1, test, None))
    jobs.append(_bench_unet(folder, unet_images))
    rows = []
    for model, version, data, calibration in jobs:
        outcome = optimize(model, version, max_drop=1.0, data=data, calibration=calibration, force=True, client=client)
        rows.append(outcome.to_json())
        print(outcome.describe(), flush=True)
    (folder / "int8.json").write_text(json.dumps(rows, indent=2))
    print("\n| model | fp32 p50 ms | int8 p50 ms | speed-up | fp32 IoU | int8 IoU | drop | MB fp32 -> int8 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} v{r['source_version']} | {r['fp32_p50_ms']:.3f} | {r['int8_p50_ms']:.3f} | "
            f"x{r['speedup']:.2f} | {r['fp32']:.4f} | {r['int8']:.4f} | {r['drop']:+.4f} | "
            f"{r['fp32_bytes'] / 1e6:.2f} -> {r['int8_bytes'] / 1e6:.2f} |"
        )


if __name__ == "__main__":
    main()
