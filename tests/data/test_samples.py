"""The sample-kind registry behind `kiln data sample`: registering, caching, safe replacement.

.venv/bin/python -m pytest tests/data/test_samples.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data import samples
from data.samples import SampleRequest, ensure_sample, get_kind, register_sample, sample_kinds


@pytest.fixture
def counting_kind(monkeypatch: pytest.MonkeyPatch) -> list[SampleRequest]:
    calls: list[SampleRequest] = []
    monkeypatch.setattr(samples, "SAMPLES", dict(samples.SAMPLES))

    @register_sample("counting", "writes one file", version=1)
    def make(request: SampleRequest) -> Path:
        calls.append(request)
        request.dst.mkdir(parents=True, exist_ok=True)
        (request.dst / "data.yaml").write_text(f"seed: {request.seed}\n")
        return request.dst / "data.yaml"

    return calls


def test_registered_kinds_include_the_yolo_scenes() -> None:
    assert {"safety", "visitor", "shapes"} <= set(sample_kinds())
    with pytest.raises(ValueError, match=r"unknown sample kind 'nope'"):
        get_kind("nope")


def test_ensure_sample_builds_once_and_rebuilds_on_a_new_request(
    counting_kind: list[SampleRequest], tmp_path: Path
) -> None:
    first = ensure_sample("counting", SampleRequest(tmp_path / "set", seed=1))
    again = ensure_sample("counting", SampleRequest(tmp_path / "set", seed=1))
    assert first == again == tmp_path / "set" / "data.yaml"
    assert len(counting_kind) == 1
    ensure_sample("counting", SampleRequest(tmp_path / "set", seed=2))
    assert len(counting_kind) == 2
    assert (tmp_path / "set" / "data.yaml").read_text() == "seed: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no staging folders left behind


def test_a_kind_registered_twice_is_an_error(counting_kind: list[SampleRequest]) -> None:
    with pytest.raises(ValueError, match=r"'counting' is registered twice"):
        register_sample("counting", "again")(lambda request: request.dst)


def test_samples_go_to_the_working_folder_when_the_package_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data.samples import samples_dir

    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "data"
    monkeypatch.chdir(tmp_path)
    assert samples_dir({}, installed) == tmp_path.resolve() / ".kiln" / "samples"
    assert samples_dir({}, tmp_path / "checkout" / "data") == tmp_path / "checkout" / "data" / "samples"
    assert samples_dir({"KILN_SAMPLES_DIR": str(tmp_path / "s")}, installed) == (tmp_path / "s").resolve()
