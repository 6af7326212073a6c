from dataclasses import dataclass

import pytest

from projects.common.config import ConfigError, cfg_field, resolve_config


@dataclass
class Cfg:
    epochs: int = cfg_field(10, "epochs")
    lr: float = cfg_field(1e-3, "lr")
    name: str = cfg_field("a", "name")
    flag: bool = cfg_field(False, "flag")


def test_defaults_then_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\ntrain:\n  lr: 0.1\n")
    cfg = resolve_config(Cfg, path, {"epochs": "7", "name": "", "lr": None})
    assert (cfg.epochs, cfg.lr, cfg.name) == (7, 0.1, "a")


def test_mlproject_floats_become_ints():
    assert resolve_config(Cfg, None, {"epochs": "3.0", "flag": "true"}).epochs == 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"epochs": "2.5"}, "Cfg.epochs: expected int, got '2.5'"), ({"flag": "maybe"}, "Cfg.flag"),
     ({"nope": 1}, "unknown option 'nope'")],
)  # fmt: skip
def test_bad_flags_name_the_field(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(Cfg, None, flags)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 1\nwat: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown keys \['wat'\]"):
        resolve_config(Cfg, path, {})
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(Cfg, tmp_path / "missing.yaml", {})
