"""What `kiln tune` costs and saves: a trial against the same training alone, and pruning against no pruning.

    python bench/tune_bench.py overhead --repeats 3 --epochs 4 --img-size 64
    python bench/tune_bench.py pruning --trials 20 --epochs 16 --img-size 32 --pruners forecast,median,none

`overhead` alternates one plain tracked edgnet training (its own run, no export) with one Optuna trial of the same
config (a nested child run, an epoch listener reporting to Optuna, the study's storage writes), and prints the
median time of each and their ratio on both clocks (wall, and process CPU time of all threads).

`pruning` runs the same 20-trial edgnet search once per pruner (`--pruners`: kiln's default forecast pruner, the
median pruner, none), with Optuna's RandomSampler on one seed so every study draws the same 20 configs. It prints
each study's wall and CPU time, its trial states and its best value; the best values agree whenever the pruner
spared the best config. It also splits each study's CPU into the epochs (the trainer's `_run_epoch`, timed by
wrapping it) and everything else, per trial: what a trial costs beyond its training; then each pruner's saving of
CPU, wall time and epochs against the last study (none). A one-trial, one-epoch study runs first, untimed, so that
no timed study pays the imports.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import mlflow

Timing = tuple[float, float]  # (wall seconds, process CPU seconds)


def _now() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    wall, cpu = _now()
    return wall - start[0], cpu - start[1]


def _store(tmp: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["KILN_HOME"] = str(tmp / "kiln")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)


def _drawings(tmp: Path, images: int, size: int) -> str:
    from data.drawings import generate

    return str(generate(tmp / "drawings", images, size, 0))


def _sets(data: str, epochs: int, img_size: int) -> dict[str, Any]:
    return {"data": data, "epochs": epochs, "img_size": img_size, "batch_size": 4, "patience": 0, "overlay_every": 0}


@click.group()
def main() -> None:
    """Benchmarks of kiln tune."""


@main.command()
@click.option("--repeats", default=3, show_default=True)
@click.option("--epochs", default=4, show_default=True)
@click.option("--img-size", default=64, show_default=True)
@click.option("--images", default=24, show_default=True)
def overhead(repeats: int, epochs: int, img_size: int, images: int) -> None:
    """A tuned trial against the same training alone."""
    import optuna

    from experiments.runs import create_child, train_in_run
    from experiments.space import parse_space
    from experiments.tune import TuneSpec, objective, open_study

    tmp = Path(tempfile.mkdtemp(prefix="kiln-tune-bench-"))
    _store(tmp)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    client = mlflow.MlflowClient()
    sets = _sets(_drawings(tmp, images, img_size), epochs, img_size)
    space = parse_space({"lr": {"type": "categorical", "choices": [0.002]}}, "bench")
    parent = client.create_run("0", run_name="bench-parent").info.run_id
    spec = TuneSpec("edgnet", space, 10**6, "best_val_iou", "max", ("val_iou",), "none", "random", 0, "bench",
                    f"sqlite:///{tmp / 'optuna.db'}", None, {k: str(v) for k, v in sets.items()}, parent,
                    mlflow.get_tracking_uri(), 10**6)  # fmt: skip
    study = open_study(spec)
    run_trial = objective(spec, client)

    def alone() -> Timing:
        start = _now()
        child = create_child(client, parent, "alone", {})
        train_in_run(client, child, "edgnet", {**spec.sets, "lr": "0.002"})
        return _since(start)

    def trial() -> Timing:
        start = _now()
        study.optimize(run_trial, n_trials=1)
        return _since(start)

    alone()  # warm-up: imports, allocator, kernels
    plain, tuned = [], []
    for _ in range(repeats):
        plain.append(alone())
        tuned.append(trial())
    print(f"edgnet @ {img_size}px, {images} images, {epochs} epochs, {repeats} pairs (alternating)")
    for i, clock in enumerate(("wall", "CPU")):
        p, t = [x[i] for x in plain], [x[i] for x in tuned]
        ratio = statistics.median(t) / statistics.median(p)
        print(f"{clock:>4}: alone median {statistics.median(p):.2f}s, trial median {statistics.median(t):.2f}s; "
              f"trial/alone = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")  # fmt: skip


@main.command()
@click.option("--trials", default=20, show_default=True)
@click.option("--epochs", default=8, show_default=True)
@click.option("--img-size", default=32, show_default=True)
@click.option("--images", default=24, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--pruners",
    default="forecast,median,none",
    show_default=True,
    help="studies to run, comma-separated; the last is the baseline the savings are measured against",
)
def pruning(trials: int, epochs: int, img_size: int, images: int, seed: int, pruners: str) -> None:
    """The same random search under each pruner (the default forecast, the median, none)."""
    from experiments.tune import tune
    from projects.common.trainer import Trainer

    epochs_cpu = {"seconds": 0.0, "count": 0}
    run_epoch = Trainer._run_epoch

    def timed_epoch(self: Trainer, epoch: int) -> dict[str, float]:
        start = time.process_time()
        try:
            return run_epoch(self, epoch)
        finally:
            epochs_cpu["seconds"] += time.process_time() - start
            epochs_cpu["count"] += 1

    Trainer._run_epoch = timed_epoch  # type: ignore[method-assign]
    tmp = Path(tempfile.mkdtemp(prefix="kiln-prune-bench-"))
    _store(tmp)
    sets = {k: str(v) for k, v in _sets(_drawings(tmp, images, img_size), epochs, img_size).items()}
    space = tmp / "space.yaml"
    space.write_text("lr: {type: float, low: 0.00005, high: 0.05, log: true}\n"
                     "weight_decay: {type: float, low: 0.000001, high: 0.1, log: true}\n")  # fmt: skip
    print(f"edgnet @ {img_size}px, {images} images, {epochs} epochs, {trials} trials, RandomSampler(seed={seed})")
    tune("edgnet", str(space), 1, pruner="none", sampler="random", seed=seed, study="warm-up",
         sets={**sets, "epochs": "1"}, register_best=False)  # fmt: skip
    names = [p.strip() for p in pruners.split(",") if p.strip()]
    if not names:
        raise click.BadParameter("name at least one pruner", param_hint="--pruners")
    studies: dict[str, tuple[float, float, float, float | None]] = {}
    for pruner in names:
        before = dict(epochs_cpu)
        start = _now()
        result = tune("edgnet", str(space), trials, pruner=pruner, sampler="random", seed=seed, study=f"b-{pruner}",
                      sets=sets, register_best=False)  # fmt: skip
        wall, cpu = _since(start)
        n, in_epochs = epochs_cpu["count"] - before["count"], epochs_cpu["seconds"] - before["seconds"]
        print(f"{pruner:>6}: wall {wall:.1f}s, CPU {cpu:.1f}s, states {result.counts}, best {result.metric} "
              f"{result.best_value:.4f} (trial {result.best_trial}, {result.best_params})")  # fmt: skip
        print(f"{'':>6}  {n} epochs, CPU {in_epochs:.1f}s in epochs ({1000 * in_epochs / max(n, 1):.0f} ms each), "
              f"{cpu - in_epochs:.1f}s outside = {(cpu - in_epochs) / trials:.2f}s per trial")  # fmt: skip
        studies[pruner] = (wall, cpu, n, result.best_value)
    base = names[-1]
    bw, bc, bn, bv = studies[base]
    for pruner, (wall, cpu, n, value) in studies.items():
        if pruner != base:
            same = "the same best" if value == bv else f"best {value} against {bv}"
            print(f"{pruner} against {base}: CPU saved {1 - cpu / bc:.1%}, wall saved {1 - wall / bw:.1%}, "
                  f"epochs saved {1 - n / max(bn, 1):.1%}, {same}")  # fmt: skip


if __name__ == "__main__":
    main()
