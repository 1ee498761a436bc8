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
