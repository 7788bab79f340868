from pathlib import Path

import pytest

from synthdet.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in str(info.value)
    assert str(path) in str(info.value)


def test_bad_values_are_explained(tmp_path):
    path = write(tmp_path, "train:\n  lr: -1\nmodel:\n  name: resnet7\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "train.lr: Input should be greater than 0 (got -1)" in message
    assert "unknown model 'resnet7'" in message and "resnet18" in message


def test_unknown_representation_lists_available(tmp_path):
    with pytest.raises(ConfigError, match=r"features.representations.*unknown representation.*fft_mag"):
        load_config(write(tmp_path, "features:\n  representations: [fft_magnitude]\n"))


def test_overrides_parse_yaml_values_and_nested_keys(tmp_path):
    config = load_config(write(tmp_path, "train:\n  epochs: 3\n"), ["train.epochs=7", "train.lr=1e-3", "data.crop=640x480"])
    assert config.train.epochs == 7
    assert config.train.lr == pytest.approx(1e-3)
    assert config.data.crop == (480, 640)  # stored (height, width); "640x480" is width x height


def test_malformed_override_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_split_fractions_must_sum_to_one(tmp_path):
    with pytest.raises(ConfigError, match="train \\+ val \\+ test must be 1"):
        load_config(write(tmp_path, "data:\n  splits: {train: 0.5, val: 0.1, test: 0.1}\n"))


def test_source_needs_exactly_one_location(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        load_config(write(tmp_path, "data:\n  sources:\n    - {name: a, label: real}\n"))


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    config = load_config(write(tmp_path, "data:\n  sources:\n    - {path: imgs, label: real}\n"))
    assert config.data.sources[0].path == (tmp_path / "imgs").resolve()


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(write(tmp_path, "data:\n  crop: 640x480\n"))
    again = load_config(write(tmp_path, config.to_yaml()))
    assert again == config


def test_split_folders_use_needs_a_folder_source_split_automatically(tmp_path):
    with pytest.raises(ConfigError, match="split_folders: use needs a folder source"):
        load_config(write(tmp_path, "data:\n  sources:\n    - {path: a, split: test, split_folders: use}\n"))
