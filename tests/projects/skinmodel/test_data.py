"""skinmodel CSV checks: each bad file is refused before training with a message naming the problem."""

import numpy as np
import pytest

from projects.skinmodel.data import TableError, load_table, split_table


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(n, target=lambda i: "yes" if i % 2 else "no"):
    return "a,b,label\n" + "".join(f"{i},{i * 0.5},{target(i)}\n" for i in range(n))


def test_reads_features_and_encodes_text_classes(tmp_path):
    table = load_table(write(tmp_path, rows(10)), "label")
    assert table.task == "binary" and table.classes == ["no", "yes"]
    assert table.features.dtype == np.float32 and table.features.shape == (10, 2)
    assert table.feature_names == ["a", "b"] and list(table.target[:3]) == [0, 1, 0]
    assert table.profile()["class_counts"] == {"no": 5, "yes": 5}


def test_missing_feature_values_become_nan(tmp_path):
    table = load_table(write(tmp_path, "a,b,label\n1,,x\n2,3,y\n,4,x\n5,6,y\n"), "label")
    assert np.isnan(table.features).sum() == 2 and table.profile()["missing_values"] == 2


@pytest.mark.parametrize(
    ("text", "target", "message"),
    [
        ("", "label", "the CSV file is empty"),
        ("a,b,label\n", "label", "the CSV has a header (3 columns) but no data rows"),
        (rows(6), "diagnosis", "no target column 'diagnosis'; columns are ['a', 'b', 'label']"),
        ("a,b,label\n1,x1,p\n2,3,q\n3,4,p\n", "label", "feature column 'b' is not numeric (e.g. 'x1' on CSV line 2)"),
        (rows(6, lambda i: "same"), "label", "target column 'label' has a single class ('same')"),
        ("a,label\n1,p\n2,\n3,q\n", "label", "target column 'label' is empty in 1 row(s) (CSV lines 3"),
        ("label\n1\n0\n", "label", "no feature columns besides the target 'label'"),
    ],
)  # fmt: skip
def test_bad_csv_is_named(tmp_path, text, target, message):
    path = write(tmp_path, text)
    with pytest.raises(TableError) as info:
        load_table(path, target)
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TableError, match="data file not found: .*nope.csv"):
        load_table(tmp_path / "nope.csv", "label")


def test_task_auto_detection(tmp_path):
    assert load_table(write(tmp_path, rows(9, lambda i: i % 3)), "label").task == "multiclass"
    assert load_table(write(tmp_path, rows(9, lambda i: i % 2)), "label").task == "binary"
    assert load_table(write(tmp_path, rows(30, lambda i: i * 1.5)), "label").task == "regression"
    assert load_table(write(tmp_path, rows(30, lambda i: i)), "label").task == "regression"  # 30 distinct ints


def test_task_that_does_not_fit_the_target_is_refused(tmp_path):
    path = write(tmp_path, rows(9, lambda i: "abc"[i % 3]))
    with pytest.raises(TableError, match="task 'binary' needs 2 classes, but 'label' has 3"):
        load_table(path, "label", "binary")
    with pytest.raises(TableError, match="task 'regression' needs a numeric target, but 'label' holds 'a'"):
        load_table(path, "label", "regression")
    with pytest.raises(TableError, match="unknown task 'ranking'"):
        load_table(path, "label", "ranking")


def test_drop_columns(tmp_path):
    path = write(tmp_path, "id,a,label\nx1,1,p\nx2,2,q\n")
    assert load_table(path, "label", drop_columns=["id"]).feature_names == ["a"]
    with pytest.raises(TableError, match=r"cannot drop column\(s\) \['nope'\]"):
        load_table(path, "label", drop_columns=["nope"])


def test_split_is_stratified_and_refuses_singleton_classes(tmp_path):
    table = load_table(write(tmp_path, rows(20, lambda i: "p" if i < 15 else "q")), "label")
    split = split_table(table, 0.2, seed=0)
    assert len(split.y_val) == 4 and sorted(split.y_val.tolist()) == [0, 0, 0, 1]
    rare = load_table(write(tmp_path, rows(10, lambda i: "p" if i else "q")), "label")
    with pytest.raises(TableError, match=r"class\(es\) \['q'\] of 'label' have fewer than 2 rows"):
        split_table(rare, 0.2, seed=0)
    with pytest.raises(TableError, match="val_fraction must be between 0 and 1"):
        split_table(table, 0.0, seed=0)
