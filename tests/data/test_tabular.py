"""The skinmodel sample: scikit-learn's breast-cancer table written as a CSV with class names."""

import pandas as pd
from click.testing import CliRunner

from data.tabular import TARGET, main, write_breast_cancer


def test_writes_the_whole_table_with_named_classes(tmp_path):
    path = write_breast_cancer(tmp_path / "sub" / "bc.csv")
    frame = pd.read_csv(path)
    assert frame.shape == (569, 31)
    assert frame.columns[-1] == TARGET == "diagnosis"
    assert frame[TARGET].value_counts().to_dict() == {"benign": 357, "malignant": 212}
    assert "mean radius" in frame.columns and frame.drop(columns=[TARGET]).dtypes.eq("float64").all()


def test_cli_writes_to_out(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.csv").is_file()
