"""The model card: the description training writes on each registered version and on its registered model.

    python -m pytest tests/projects/common/test_modelcard.py

MLflow shows a description as Markdown at the top of the model's and the version's page. The card says, in a
few lines, what a person needs before promoting or calling the model: the task, the ranking metric with its
value and the family's trivial baseline, the data it was trained on (name, version or digest, size), the
contract in one line, how to call it (`kiln serve` and a curl line for its task endpoint) and a link to the run.
The registered model's description is the newest version's card; its promotion history section, below it, is
kept as it is (`registry.history` rewrites that section after each alias move).
"""

from __future__ import annotations

import json

from mlflow import MlflowClient
from mlflow.entities import Run

from core.contract import DetectionPost, ModelContract, RegressionPost, SegmentationPost, TabularPost
from projects.common.console import model_url, run_url
from registry.baseline import BASELINE_KIND_TAG, BASELINE_TAG
from registry.history import DESCRIPTION_LIMIT, split_description

VERSION_LIMIT = 5000  # MLflow's model_versions.description column
SIZE_KEYS = ("images", "rows", "samples", "train", "val", "features")


def contract_line(contract: ModelContract) -> str:
    """`gray 96x96 image (stretch), (x/255 - 0.5)/0.2 -> sigmoid mask > 0.5` and the like, in one line."""
    pre, post = contract.preprocess, contract.postprocess
    if contract.tabular_input is not None and isinstance(post, TabularPost):
        names = post.feature_names
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} features)" if len(names) > 4 else "")
        out = f"classes {list(post.classes)}" if post.classes else "a value"
        return f"records of {shown} ({contract.tabular_input.dtype}, missing = NaN) -> {post.task}: {out}"
    inp = ""
    if pre is not None:
        mean = "/".join(f"{m:g}" for m in pre.mean)
        std = "/".join(f"{s:g}" for s in pre.std)
        inp = f"{pre.color} {pre.size[1]}x{pre.size[0]} image ({pre.resize}), (x/255 - {mean})/{std}"
    if isinstance(post, SegmentationPost):
        return f"{inp} -> {post.activation} mask > {post.threshold:g}"
    if isinstance(post, DetectionPost):
        return f"{inp} -> boxes of {list(post.names)} (conf {post.conf:g}, NMS IoU {post.iou:g})"
    if isinstance(post, RegressionPost):
        layout = f" ({post.layout})" if post.layout else ""
        return f"{inp} -> values of shape {list(post.output_shape)}{layout}"
    return inp or (contract.task or "unknown task")


def curl_line(name: str, contract: ModelContract) -> str:
    url = f"127.0.0.1:8080/v1/models/{name}/predict"
    if contract.task == "tabular" and isinstance(contract.postprocess, TabularPost):
        record = {f: 0 for f in contract.postprocess.feature_names[:3]}
        more = " (every feature)" if len(contract.postprocess.feature_names) > 3 else ""
        return f"curl -H 'content-type: application/json' -d '{json.dumps([record])}' {url}{more}"
    return f"curl -F image=@picture.png {url}"


def data_line(run: Run) -> str:
    """Name, version or digest and size of each dataset the run logged as an input."""
    parts = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in item.tags}
        if tags.get("mlflow.data.context", "training") != "training":
            continue
        ds = item.dataset
        sizes = [f"{_plain(tags[k])} {k}" for k in SIZE_KEYS if k in tags]
        ref = ds.name if "@" in ds.name else f"{ds.name} (digest {ds.digest[:12]})"
        parts.append(ref + (f", {', '.join(sizes)}" if sizes else ""))
    return "; ".join(parts) or "not recorded"


def _plain(value: str) -> str:
    try:
        loaded = json.loads(value)
    except ValueError:
        return value
    return str(loaded)


def metric_line(run: Run, contract: ModelContract) -> str:
    ranking = contract.ranking
    if ranking is None:
        return "none declared"
    value = run.data.metrics.get(ranking.metric)
    shown = f"{value:.4g}" if value is not None else "not logged"
    better = "higher" if ranking.mode == "max" else "lower"
    tags = run.data.tags
    baseline = ""
    if BASELINE_TAG in tags:
        kind = f" ({tags[BASELINE_KIND_TAG]})" if tags.get(BASELINE_KIND_TAG) else ""
        baseline = f"; trivial baseline {tags[BASELINE_TAG]}{kind}"
    return f"`{ranking.metric}` = {shown} ({better} is better){baseline}"


def card(name: str, version: int, contract: ModelContract, run: Run) -> str:
    """The version's card, in Markdown."""
    family = f" (family {contract.family})" if contract.family else ""
    lines = [
        f"**{name} v{version}**: {contract.task or 'model'}{family}",
        "",
        f"- **Metric:** {metric_line(run, contract)}",
        f"- **Data:** {data_line(run)}",
        f"- **Contract:** {contract_line(contract)}",
        f"- **Call it:** `kiln promote {name} --version {version}`, `kiln serve`, then `{curl_line(name, contract)}`",
        f"- **Run:** [{run.info.run_name or run.info.run_id}]({run_url(run.info.experiment_id, run.info.run_id)})",
    ]
    return "\n".join(lines)


def model_card(name: str, version: int, contract: ModelContract, run: Run) -> str:
    """The registered model's card: what the model is, and its newest version's card."""
    return "\n".join(
        [
            f"### {name}",
            f"Newest version v{version} ([page]({model_url(name, version)})), registered by training run "
            f"`{run.info.run_id}`. Promote with `kiln promote {name} --version N`; `kiln models` compares versions.",
            "",
            card(name, version, contract, run),
        ]
    )


def write_cards(client: MlflowClient, name: str, version: int, contract: ModelContract, run_id: str) -> str:
    """Describe version `version` and its registered model (keeping the model's history section)."""
    run = client.get_run(run_id)
    text = card(name, version, contract, run)
    client.update_model_version(name, str(version), description=text[:VERSION_LIMIT])
    current = client.get_registered_model(name).description
    history = split_description(current)[1]
    described = model_card(name, version, contract, run) + (f"\n\n{history}" if history else "")
    client.update_registered_model(name, description=described[:DESCRIPTION_LIMIT])
    return text
