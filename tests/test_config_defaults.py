"""One config style: the dataclass defaults are the default presets (`tiny` for pre-training, RL and
the reproduce grid), presets list only what differs from them, and world v1 is gone.

    OMP_NUM_THREADS=1 PYTHONPATH=src python -m pytest tests/test_config_defaults.py -q
"""

from __future__ import annotations

import pytest
import yaml

from shapedce.config import PRESET_DIR, RunConfig, build_config, load_config, preset_names, read_preset
from shapedce.errors import UserError
from shapedce.reproduce.grid import PRESET_DIR as GRID_PRESET_DIR
from shapedce.reproduce.grid import SECTION_PRESETS, GridConfig, load_grid
from shapedce.reproduce.scheduler import _flat
from shapedce.train.rl_config import PRESET_DIR as RL_PRESET_DIR
from shapedce.train.rl_config import RLConfig, load_rl_config


def test_the_default_presets_resolve_to_the_dataclass_defaults():
    assert load_config("tiny") == RunConfig()
    assert load_rl_config("tiny") == RLConfig()
    assert load_grid("tiny") == GridConfig()
    for path in (PRESET_DIR / "tiny.yaml", RL_PRESET_DIR / "tiny.yaml", GRID_PRESET_DIR / "tiny.yaml"):
        assert not yaml.safe_load(path.read_text())  # comments only: the defaults are the preset


@pytest.mark.parametrize(
    "preset_dir, build",
    [
        (PRESET_DIR, lambda data: build_config(data)),
        (RL_PRESET_DIR, lambda data: build_config(data, cls=RLConfig)),
    ],
)
def test_stage_presets_list_only_what_differs_from_the_defaults(preset_dir, build):
    default = _flat(build({}).to_dict())
    for name in preset_names(preset_dir):
        listed = _flat(read_preset(name, preset_dir))
        resolved = _flat(build(read_preset(name, preset_dir)).to_dict())
        same = [k for k in listed if resolved[k] == default[k]]
        assert not same, f"{preset_dir.name}/{name}.yaml restates defaults: {same}"


def test_grid_presets_list_only_what_differs():
    default = _flat(GridConfig().to_dict())
    for name in preset_names(GRID_PRESET_DIR):
        raw = read_preset(name, GRID_PRESET_DIR)
        resolved = _flat(load_grid(name).to_dict())
        for key, value in _flat(raw).items():
            section, _, rest = key.partition(".")
            if rest == "preset":
                assert value != "tiny", f"reproduce/{name}.yaml: {key}=tiny is the default"
                continue
            if section in SECTION_PRESETS and "preset" in raw[section]:  # on top of that preset
                base = _flat(read_preset(raw[section]["preset"], SECTION_PRESETS[section]))
                assert base.get(rest) != value, f"reproduce/{name}.yaml: {key} restates its preset"
            else:
                assert resolved[key] != default[key], f"reproduce/{name}.yaml: {key} restates the default"


@pytest.mark.parametrize("key", ["data.corpus", "midtrain.corpus"])
def test_world_v1_is_refused_with_one_line_naming_the_field(key):
    assert RunConfig().data.corpus == RunConfig().midtrain.corpus == "builtin-v2"
    with pytest.raises(UserError, match=rf"^{key} must be builtin-v2 .*world v1.*; got 'builtin'$"):
        load_config("smoke", [f"{key}=builtin"])
    assert load_config("smoke", [f"{key}=/data/my.jsonl"])  # a local path is fine


def test_every_preset_is_in_the_current_world():
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.data.corpus == cfg.midtrain.corpus == "builtin-v2", name
