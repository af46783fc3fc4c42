"""The typed config loader: strict keys, types, values, YAML files and dotted overrides."""
import pytest

from fmdepth.config import (Config, ConfigError, apply_overrides, config_from_dict, config_to_dict,
                            load_config, save_config)


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    path = tmp_path / "config.yaml"
    save_config(cfg, str(path))
    assert config_to_dict(load_config(str(path))) == config_to_dict(cfg)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epocs'.*did you mean 'epochs'"):
        config_from_dict({"train": {"epocs": 3}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'"):
        config_from_dict({"trian": {}})


@pytest.mark.parametrize("override, key", [
    ("train.epochs=three", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("data.frame_ids=5", "data.frame_ids"),
    ("data.stereo=maybe", "data.stereo"),
    ("optim.lr=abc", "optim.lr"),
])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, [override])


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"),
    ("data.height=100", "data.height"),
    ("data.frame_ids=[-1, 1]", "data.frame_ids"),
    ("task=segmentation", "task"),
])
def test_impossible_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, [override])


def test_exponent_strings_are_floats():
    # PyYAML (YAML 1.1) reads "2e-4" as a string; float keys accept it.
    assert load_config(None, ["optim.lr=2e-4"]).optim.lr == pytest.approx(2e-4)


def test_yaml_file_and_overrides_compose(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\ndata:\n  height: 96\n  width: 320\n")
    cfg = load_config(str(path), ["train.epochs=5", "data.frame_ids=[0, -1]"])
    assert (cfg.train.epochs, cfg.data.height, cfg.data.width) == (5, 96, 320)
    assert cfg.data.frame_ids == [0, -1]


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'optim\.learning_rate'"):
        load_config(str(typo))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"task": "depth"}, ["task.sub=1"])


@pytest.mark.parametrize("override, key", [
    ("registration.method=rigid", "registration.method"),
    ("registration.similarity=ssd", "registration.similarity"),
    ("registration.modalities=[xray]", "registration.modalities"),
    ("registration.modalities=[ihc]", "registration.modalities"),  # not in the torch synthesiser
])
def test_registry_values_name_the_key_when_the_task_is_built(override, key):
    # the allowed values live in the code's registries, above config: checked before the task is built
    from fmdepth.tasks import check_choices

    base = ["task=registration", "data.dataset=registration_pairs", "registration.synthetic_generator=torch"]
    check_choices(load_config(None, base))  # the defaults are known to the registries
    cfg = load_config(None, base + [override])
    with pytest.raises(ConfigError, match=f"'{key}'"):
        check_choices(cfg)
