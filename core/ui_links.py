"""Links into the MLflow UI that open in its model-training view, the one place kiln builds them.

    python -c "from core.ui_links import runs_table_url; print(runs_table_url('http://127.0.0.1:5000', '0'))"

MLflow 3's UI opens on its GenAI home, and an experiment on the GenAI overview, unless the URL carries
`workflowType=machine_learning`; with it, an experiment link lands on the runs table and a run link on the run
with the model-training sidebar. Every link kiln prints (training's console, the jobs page, `make run`/`make
ui`, the README) is built here or spelled as here.
"""

from __future__ import annotations

from urllib.parse import quote

ML_VIEW = "workflowType=machine_learning"


def runs_table_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{base.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs?{ML_VIEW}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return f"{base.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}?{ML_VIEW}"


def experiments_url(base: str) -> str:
    """The list of experiments (when the experiment has no id yet)."""
    return f"{base.rstrip('/')}/#/experiments?{ML_VIEW}"
