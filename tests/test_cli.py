import subprocess
import sys

from jobs.cli import main
from tests.conftest import REPO_ROOT


def test_usage_lists_commands(capsys):
    assert main([]) == 2
    assert "validate" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_bad_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cf_typo: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "validate", "--data", str(tmp_path), "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "unknown key 'cf_typo'" in proc.stderr
    assert "Traceback" not in proc.stderr
