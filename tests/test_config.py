from pathlib import Path

import pytest

from models.config import config_digest, load_config
from models.errors import TailorMindError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load_config()
    assert config.seed == 0
    assert config.ray.address is None


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path / "c.yaml", "seed: 3\ndata:\n  strict: false\n")
    config = load_config(path, ["data.strict=true", "seed=7", "ray.num_cpus=2"])
    assert (config.seed, config.data.strict, config.ray.num_cpus) == (7, True, 2)


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  strictt: true\n")
    with pytest.raises(TailorMindError) as err:
        load_config(path)
    message = str(err.value)
    assert "unknown key 'data.strictt'" in message
    assert str(path) in message
    assert "did you mean 'data.strict'" in message


def test_wrong_type_from_override_names_the_override(tmp_path):
    with pytest.raises(TailorMindError) as err:
        load_config(None, ["ray.num_cpus=many"])
    message = str(err.value)
    assert "ray.num_cpus" in message and "--set ray.num_cpus=many" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- a\n- b\n", "must hold a mapping"), ("seed: [1, 2\n", "not valid YAML")],
)
def test_bad_files(tmp_path, text, expected):
    with pytest.raises(TailorMindError, match=expected):
        load_config(write(tmp_path / "c.yaml", text))


def test_missing_file(tmp_path):
    with pytest.raises(TailorMindError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("item", ["seed", "=3", "data..strict=1"])
def test_malformed_override(item):
    with pytest.raises(TailorMindError, match=r"dotted\.key=value"):
        load_config(None, [item])


def test_override_into_a_value_is_refused(tmp_path):
    with pytest.raises(TailorMindError, match="'seed', which is a value"):
        load_config(write(tmp_path / "c.yaml", "seed: 3\n"), ["seed.x=1"])


def test_digest_tracks_values():
    a = load_config(None, ["seed=1"])
    b = load_config(None, ["seed=2"])
    assert config_digest(a) != config_digest(b)
    assert config_digest(a.ray) == config_digest(b.ray)


def test_video_sizes_must_suit_the_video_vae():
    with pytest.raises(TailorMindError) as err:
        load_config(None, ["generation.video.height=100"])
    assert "generation.video.height" in str(err.value) and "multiple of 16" in str(err.value)


def test_a_serve_app_asked_for_clips_needs_a_video_deployment():
    from serve.app import tailormind_app

    with pytest.raises(TailorMindError, match=r"configure serve\.video"):
        tailormind_app(load_config(None, ["generation.num_videos=1"]))


def test_softmax_negatives_scale_with_the_catalogue_unless_set():
    cf = load_config(None, []).cf
    assert [cf.shared_negatives(n) for n in (500, 9_742, 40_981, 10**6)] == [1024, 1024, 4096, 4096]
    assert load_config(None, ["cf.negatives=7"]).cf.shared_negatives(10**6) == 7
