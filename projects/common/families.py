"""The family registry: each model family registers itself once, as timm registers models.

    python -c "from projects.common.families import get_family; print(get_family('edgnet_large'))"
    kiln train edgnet --set epochs=2 --set img_size=64

A family is its config dataclass, its `train(cfg) -> dict[str, float]`, the task of the model it registers
(`core.contract.TASKS`), the metric that ranks its versions (a summary logged once for the exported weights) and
its presets: named overrides of the config defaults, one MLproject entry point each. A family without presets has
one entry point, under its own name.

Families register from a light module, `projects/<family>/config.py` (the config dataclass, the presets and
`register_family(Family(...))`, importing neither torch nor ultralytics nor mlflow), naming their train and smoke
functions with `lazy("projects.<family>.train:train")`: the train module is imported on the first call only, so
`kiln train NAME --help` starts in well under a second. A folder without config.py registers from train.py.
`get_family(name)` imports that module only when asked; a name that is no family is looked up among every
family's presets. Config resolution is the same everywhere
(`mlflow run`, `kiln train`, `train_family`): dataclass defaults, then the preset, then a YAML file, then overrides.
See docs/families.md ("How to add a family").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.contract import TASKS, Ranking
from core.errors import ConfigError
from projects.common.callbacks import EpochListener
from projects.common.config import resolve_config

PROJECTS_DIR = Path(__file__).resolve().parents[1]
SHARED_PACKAGES = frozenset({"common"})  # folders of projects/ that are no family
REGISTERING_MODULES = ("config.py", "train.py")  # the first one a family folder has registers it

# (config_path, flags, base) -> config; base holds a preset's overrides, applied before the YAML and the flags
ConfigLoader = Callable[[str | None, Mapping[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Preset:
    """Named config overrides: one MLproject entry point (and `kiln train` name) each."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)  # config field -> value, applied before YAML
    summary: str = ""  # one line for docs and `kiln train` errors


@dataclass(frozen=True)
class Family:
    name: str  # the folder under projects/ (the lazy import looks for projects/<name>/config.py, then train.py)
    config_cls: type[Any]  # the @dataclass of every option, with a default and a help string each
    # train(cfg, listeners=()) trains, tracks, exports and registers, telling `listeners` of every epoch; returns
    # the final metrics
    train: Callable[..., dict[str, float]]
    task: str  # the registered model's kiln.task: segmentation, detection, tabular or regression
    ranking: Ranking  # the summary metric (logged once, for the exported weights) that ranks versions
    presets: tuple[Preset, ...] = ()  # named overrides; empty: one entry point under the family's name
    module: str = ""  # the train module, `python -m <module>` in MLproject; default projects.<name>.train
    load_config: ConfigLoader | None = None  # a family's own resolution (e.g. a default YAML file)
    # The per-step metric and mode that pick the exported step (best.pt, the kept round); the ranking metric is
    # that step's value of its per-step twin (best_val_iou <-> val_iou). tests/projects/test_families.py checks it.
    selected_by: Ranking | None = None
    # Tiny settings for the registry's smoke test: writes tiny data under the given folder and returns config
    # overrides that train, export and register in seconds on a CPU.
    smoke: Callable[[Path], dict[str, Any]] | None = None
    summary: str = ""  # one line
    # The config fields each MLproject entry point of the family takes as parameters, in order (kiln/mlproject.py
    # generates MLproject from them and the presets; a preset's other overrides become fixed flags).
    mlproject: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"family {self.name!r}: task {self.task!r} is not one of {list(TASKS)}")
        if not self.module:
            object.__setattr__(self, "module", f"projects.{self.name}.train")
        names = [p.name for p in self.presets]
        if len(set(names)) != len(names):
            raise ValueError(f"family {self.name!r} lists a preset twice: {names}")

    @property
    def entry_points(self) -> tuple[str, ...]:
        """The MLproject entry points (and `kiln train` names) of this family."""
        return tuple(p.name for p in self.presets) or (self.name,)

    def preset(self, name: str) -> Preset | None:
        return next((p for p in self.presets if p.name == name), None)

    def resolve(
        self, preset: str | None = None, config_path: str | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Any:
        """Defaults -> `preset`'s overrides -> the YAML at `config_path` -> `overrides`; a bad key or value is a
        ConfigError naming it."""
        chosen = self.preset(preset) if preset else None
        if preset and chosen is None:
            raise ConfigError(f"family {self.name!r} has no preset {preset!r}; known: {list(self.entry_points)}")
        base = dict(chosen.overrides) if chosen else {}
        flags = {str(k).replace("-", "_"): v for k, v in (overrides or {}).items()}
        if self.load_config is not None:
            return self.load_config(config_path, flags, base)
        return resolve_config(self.config_cls, config_path, flags, base=base)


class Lazy:
    """A function named by `"package.module:attr"`, imported on its first call (see `lazy`)."""

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"lazy target {target!r}: expected 'package.module:function'")
        self.target = target
        self._module, self._attr = module, attr
        self._function: Callable[..., Any] | None = None

    def resolve(self) -> Callable[..., Any]:
        if self._function is None:
            function = getattr(importlib.import_module(self._module), self._attr)
            if not callable(function):
                raise TypeError(f"lazy target {self.target!r} is not callable")
            self._function = function
        return self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


def lazy(target: str) -> Any:
    """`Family(train=lazy("projects.edgnet.train:train"))`: a family registered from its light config module
    names its train (and smoke) function without importing torch; the module is imported on the first call."""
    return Lazy(target)


FAMILIES: dict[str, Family] = {}  # family name -> Family, filled as config (or train) modules are imported


def register_family(family: Family) -> Family:
    """Add `family`; its preset names must not clash with another family's names."""
    known = FAMILIES.get(family.name)
    if known is not None and known.module != family.module:
        raise ValueError(f"family {family.name!r} registered twice ({known.module} and {family.module})")
    taken = {n: f.name for f in FAMILIES.values() if f.name != family.name for n in (f.name, *f.entry_points)}
    clashes = sorted(n for n in {family.name, *family.entry_points} if n in taken)
    if clashes:
        raise ValueError(f"family {family.name!r}: names {clashes} already belong to {[taken[n] for n in clashes]}")
    FAMILIES[family.name] = family
    return family


def family_folders() -> list[str]:
    """Folders under projects/ with a config or train module: each one registers a family when imported."""
    return sorted(
        p.name
        for p in PROJECTS_DIR.iterdir()
        if p.name not in SHARED_PACKAGES and any((p / m).is_file() for m in REGISTERING_MODULES)
    )


def load_all() -> dict[str, Family]:
    """Import every family's registering module (config.py, else train.py); returns the registry."""
    for folder in family_folders():
        _import_family(folder)
    return FAMILIES


def _import_family(folder: str) -> None:
    if folder not in FAMILIES:
        module = next(m for m in REGISTERING_MODULES if (PROJECTS_DIR / folder / m).is_file())
        importlib.import_module(f"projects.{folder}.{module.removesuffix('.py')}")


def lookup(name_or_preset: str) -> tuple[Family, Preset | None]:
    """The family a name means, and the preset when it names one (a preset wins over a family of the same name)."""
    if name_or_preset in family_folders():
        _import_family(name_or_preset)
    found = _find(name_or_preset)
    if found is None:
        load_all()
        found = _find(name_or_preset)
    if found is None:
        raise ConfigError(f"unknown family or preset {name_or_preset!r}; known: {known_names()}")
    return found


def _find(name: str) -> tuple[Family, Preset | None] | None:
    for family in FAMILIES.values():
        preset = family.preset(name)
        if preset is not None:
            return family, preset
    named = FAMILIES.get(name)
    return (named, None) if named is not None else None


def get_family(name_or_preset: str) -> Family:
    """The family named, or the family owning the preset named; ConfigError naming the known ones otherwise."""
    return lookup(name_or_preset)[0]


def known_names() -> list[str]:
    """Every family and preset name (imports every family)."""
    load_all()
    return sorted({n for f in FAMILIES.values() for n in (f.name, *f.entry_points)})


def entry_points() -> dict[str, tuple[Family, Preset | None]]:
    """MLproject entry point name -> its family and preset, over every family."""
    load_all()
    return {n: (f, f.preset(n)) for f in FAMILIES.values() for n in f.entry_points}


def resolve_family_config(
    name_or_preset: str, overrides: Mapping[str, Any] | None = None, config_path: str | None = None
) -> tuple[Family, Any]:
    """The family and its resolved config: defaults -> preset -> YAML -> overrides."""
    family, preset = lookup(name_or_preset)
    return family, family.resolve(preset.name if preset else None, config_path, overrides)


def train_family(
    name_or_preset: str,
    overrides: Mapping[str, Any] | None = None,
    listeners: Iterable[EpochListener] = (),
    config_path: str | None = None,
) -> dict[str, float]:
    """Train a family or preset in this process, with `listeners` told of every epoch; returns its final metrics.

    >>> train_family("edgnet", {"epochs": 2, "img_size": 64, "num_samples": 12})  # doctest: +SKIP
    """
    family, cfg = resolve_family_config(name_or_preset, overrides, config_path)
    return family.train(cfg, listeners=tuple(listeners))
