import importlib
import re

import yaml

from models.config import load_config
from tests.conftest import REPO_ROOT

CLUSTER = REPO_ROOT / "cluster"


def _commands(text):
    return re.findall(r"python -m (jobs\.\w+) --config (\S+)", text)


def test_rayjob_entrypoint_and_config_exist():
    text = (CLUSTER / "rayjob-pipeline.yaml").read_text()
    spec = yaml.safe_load(text)
    assert spec["kind"] == "RayJob" and spec["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"
    for module, config in _commands(spec["spec"]["entrypoint"]):
        assert hasattr(importlib.import_module(module), "run")
        load_config(REPO_ROOT / config)
    workers = spec["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_cluster_launcher_config_parses_and_names_existing_recipes():
    text = (CLUSTER / "aws-gpu.yaml").read_text()
    spec = yaml.safe_load(text)
    assert spec["provider"]["type"] == "aws" and spec["max_workers"] >= 1
    commands = _commands(text)
    assert commands
    for module, config in commands:
        importlib.import_module(module)
        load_config(REPO_ROOT / config)


def test_every_recipe_in_configs_validates():
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_rayservice_builds_the_serve_app_from_an_existing_config():
    spec = yaml.safe_load((CLUSTER / "rayservice-serve.yaml").read_text())
    assert spec["kind"] == "RayService" and spec["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    (application,) = yaml.safe_load(spec["spec"]["serveConfigV2"])["applications"]
    module, _, builder = application["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), builder))
    config = load_config(REPO_ROOT / application["args"]["config"])
    assert config.serve.auth_token_env and config.generation.device == "cuda"
    head = spec["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert config.serve.auth_token_env in [variable["name"] for variable in head["env"]]
    mounts = [m["mountPath"] for m in head["volumeMounts"]]
    assert all(root in mounts for root in config.serve.media_roots)
