"""A sample set that takes a while prints progress lines; a quick one prints none but its start and end."""

import time

from data.samples import Progress, SampleRequest, ensure_sample


def test_progress_prints_a_line_per_interval_and_the_end(capsys):
    progress = Progress("safety sample", 6, "images", every=0.01)
    for i in range(6):
        time.sleep(0.015)
        progress.update(i + 1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "  safety sample: 6/6 images (100%)" and len(lines) >= 3
    assert "left" in lines[0]


def test_a_quick_set_prints_its_start_and_end_only(tmp_path, capsys):
    ensure_sample("shapes", SampleRequest(tmp_path / "shapes", count=4, size=32))
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Generating the shapes sample set in ") and err[-1].startswith("Generated the shapes")
    assert len(err) == 2
    ensure_sample("shapes", SampleRequest(tmp_path / "shapes", count=4, size=32))
    assert capsys.readouterr().err == ""  # reused, nothing said
