"""One typed config: the data section is LoaderOptions (each option set once), the earlier
data.loader_kwargs read once with a notice, fine-tuning's config checked by the same scheme."""
import json
from dataclasses import fields

import pytest

from mcl_fast.config import ConfigError, field_from_annotation
from mcl_fast.data.options import LoaderOptions
from mcl_fast.eval.finetune import FinetuneConfig
from mcl_fast.train import (DEFAULTS, LOADER_OPTIONS, check_resume_config, config_schema, load_config,
                            loader_options)

SYNTHETIC = ["data.loader=synthetic", "data.size=32", "data.clip_len=4"]


def test_the_data_section_is_every_json_loader_option_with_its_default():
    settable = {f.name for f in fields(LoaderOptions) if f.init} - {"seed", "shard_id", "num_shards", "clip_sampler",
                                                                     "batch_transform"}
    assert set(LOADER_OPTIONS) == settable
    defaults = LoaderOptions()
    for name in LOADER_OPTIONS:
        assert DEFAULTS["data"][name] == getattr(defaults, name), name
        assert f"data.{name}" in config_schema()
    assert "data.loader_kwargs" not in config_schema()


def test_loader_option_values_are_checked_by_loader_options_when_the_config_loads():
    with pytest.raises(ConfigError, match="data: size must be >= 8 pixels, got 4"):
        load_config("demo_cpu", SYNTHETIC + ["data.size=4"])
    with pytest.raises(ConfigError, match="data: verify must be one of"):
        load_config("demo_cpu", SYNTHETIC + ["data.verify=sometimes"])
    with pytest.raises(ConfigError, match="data.two_clips must be true or false, got 1"):
        load_config("demo_cpu", SYNTHETIC + ["data.two_clips=1"])
    config = load_config("demo_cpu", SYNTHETIC + ["data.video_root=elsewhere", "data.num_workers=0"])
    options = loader_options(config)
    assert (options.video_root, options.size, options.clip_len) == ("elsewhere", 32, 4)


def test_loader_kwargs_in_a_file_move_to_data_keys_with_a_notice(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"data": {"loader": "synthetic", "clip_len": 4,
                                         "loader_kwargs": {"num_workers": 0, "video_root": "v", "clip_len": 4}}}))
    with pytest.warns(UserWarning, match="read as data.num_workers, data.video_root, data.clip_len"):
        config = load_config(str(path))
    assert "loader_kwargs" not in config["data"]
    assert (config["data"]["num_workers"], config["data"]["video_root"], config["data"]["clip_len"]) == (0, "v", 4)


def test_a_loader_option_set_twice_with_different_values_is_refused_naming_both(tmp_path):
    path = tmp_path / "twice.json"
    path.write_text(json.dumps({"data": {"loader": "synthetic", "clip_len": 8, "loader_kwargs": {"clip_len": 4}}}))
    with pytest.raises(ConfigError, match="data.clip_len=8 and data.loader_kwargs.clip_len=4 set the same option"):
        load_config(str(path))
    path.write_text(json.dumps({"data": {"loader": "synthetic", "loader_kwargs": {"seed": 3}}}))
    with pytest.raises(ConfigError, match="data.loader_kwargs.seed: not an option a config sets"):
        load_config(str(path))


def test_loader_kwargs_overrides_move_to_data_keys_with_a_notice():
    with pytest.warns(UserWarning, match="data.loader_kwargs"):
        config = load_config("demo_cpu", SYNTHETIC + ['data.loader_kwargs={"num_workers": 0, "views": "pair"}',
                                                      "data.loader_kwargs.video_root=v"])
    assert (config["data"]["num_workers"], config["data"]["views"], config["data"]["video_root"]) == (0, "pair", "v")


def test_a_saved_config_with_loader_kwargs_compares_equal_to_its_data_keys():
    new = load_config("demo_cpu", SYNTHETIC)
    saved = json.loads(json.dumps(new))
    for key in ("num_workers", "drop_last", "video_root"):
        del saved["data"][key]
    saved["data"]["loader_kwargs"] = {"num_workers": 1, "drop_last": True}
    with pytest.warns(UserWarning, match="loader_kwargs"):
        assert check_resume_config(saved, new, False, "run") == []


def test_finetune_config_is_checked_by_the_same_scheme():
    FinetuneConfig(epochs=1, lr=0.1, warmup_epochs=0)
    with pytest.raises(ConfigError, match="fine-tuning config: epochs must be an integer >= 1, got 0"):
        FinetuneConfig(epochs=0)
    with pytest.raises(ConfigError, match=r'amp must be one of \["auto", "bf16", "fp16", "off"\], got "fp8"'):
        FinetuneConfig(amp="fp8")
    with pytest.raises(ConfigError, match="cache_videos must be true or false"):
        FinetuneConfig(cache_videos="yes")


@pytest.mark.parametrize("annotation,accepted,refused", [
    ("int | None", [3, None], [1.5, True]),
    ("Sequence[ViewSpec] | str | None", [[{}], "pair", None], [3]),
    ("bool | str", [True, "lazy"], [None]),
    ("object", [object(), None], []),
])
def test_a_dataclass_annotation_gives_the_kinds(annotation, accepted, refused):
    field = field_from_annotation(annotation)
    assert all(field.accepts(v) for v in accepted) and not any(field.accepts(v) for v in refused)
