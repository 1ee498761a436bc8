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
