"""The layout's import rules: models/ knows nothing of Ray; jobs/ and serve/ meet only in runtime/."""

import ast

import pytest

from tests.conftest import REPO_ROOT


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of ``package`` imports, by module path."""
    found = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO_ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("jobs", {"serve"}),
        ("serve", {"jobs"}),
        ("runtime", {"jobs", "serve"}),
        ("models", {"ray", "jobs", "serve", "runtime"}),
    ],
)
def test_packages_import_only_what_the_layout_allows(package, forbidden):
    offenders = {
        module: names & forbidden for module, names in imported_packages(package).items() if names & forbidden
    }
    assert offenders == {}


def stage_modules() -> set[str]:
    """The modules of the pipeline's stages (``jobs/<stage>.py``)."""
    from jobs.pipeline import STAGES

    return {target.split(":")[0] for target in STAGES.values()}


def test_no_stage_module_imports_another():
    """A stage hands the next its artifacts (``runtime/artifacts.py``), never its code."""
    stages = stage_modules()
    offenders = {}
    for module in sorted(stages):
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        others = (imported & stages) - {module}
        if others:
            offenders[module] = others
    assert offenders == {}


def test_stage_modules_are_wiring_only():
    """A stage module wires library objects to Ray; a long one holds domain logic that belongs in models/."""
    lengths = {
        module: len((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text().splitlines())
        for module in stage_modules()
    }
    assert {module: n for module, n in lengths.items() if n >= 150} == {}


def test_the_pipelines_light_tasks_import_no_torch():
    """Ray Data's light tasks run in many worker processes at once: the stage and step modules they import
    must not load torch or transformers (about 250 MB per process)."""
    import subprocess
    import sys

    with_model_actors = {"jobs.cf", "jobs.topk", "jobs.generate", "jobs.judge"}  # torch is their state
    stages = sorted(stage_modules() - with_model_actors)
    code = (
        f"import importlib, sys\nfor m in {[*stages, 'jobs.llm_step', 'jobs.score_step']!r}: "
        "importlib.import_module(m)\nprint(sorted({'torch', 'transformers', 'vllm'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
