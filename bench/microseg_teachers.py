"""Train one edgnet teacher per microseg sample set and give each the alias `production`.

    python bench/microseg_teachers.py /tmp/microseg-measure --img-size 64 --num-samples 60 --epochs 15

Each teacher is `edgnet` (a 3-level UNet, ~0.47M parameters, gray input) trained on the set's seed-0 images
(the same images microseg's seed-0 runs train on), registered as `edgnet_<set>`. `kiln study budget --teacher
'models:/edgnet_{dataset}@production'` then distils each dataset's cells from that dataset's teacher.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--img-size", default=64, show_default=True)
@click.option("--num-samples", default=60, show_default=True)
@click.option("--epochs", default=15, show_default=True)
@click.option("--datasets", default="seg_objects,seg_polyps,seg_leaves,seg_cracks,seg_damage", show_default=True)
def main(folder: Path, img_size: int, num_samples: int, epochs: int, datasets: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    import mlflow

    from data.segsets import ensure_segset
    from projects.common.families import train_family

    client = mlflow.MlflowClient()
    for name in datasets.split(","):
        data = ensure_segset(name, num_samples, img_size, 0)
        final = train_family(
            "edgnet",
            {
                "data": str(data),
                "img_size": img_size,
                "epochs": epochs,
                "patience": 0,
                "model_name": f"edgnet_{name}",
                "num_samples": num_samples,
                "lr": 0.003,
            },
        )
        client.set_registered_model_alias(f"edgnet_{name}", "production", str(int(final["registered_version"])))
        print(f"teacher edgnet_{name}: best val IoU {final['best_val_iou']:.4f}", flush=True)


if __name__ == "__main__":
    main()
