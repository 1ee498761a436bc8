from pathlib import Path

from jobs.cli import main
from jobs.pipeline import stages_to_force


def test_from_forces_that_stage_and_later():
    assert stages_to_force(False, "data") >= {"data"}
    assert "dataset" not in stages_to_force(False, "data")
    assert stages_to_force(True, None) is True


def test_run_imports_validates_then_skips(movielens_src, tmp_path, capsys):
    args = [
        "run",
        "--out",
        str(tmp_path / "run"),
        "--set",
        f"data.movielens_src={movielens_src}",
        "--until",
        "data",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset    ") and "\ndata       " in out and " s  " in out  # a line per stage
    assert (tmp_path / "run" / "data" / "interactions.parquet").exists()
    assert main(args) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 2
    assert main([*args, "--from", "data"]) == 0
    out = capsys.readouterr().out
    assert "dataset    up to date, skipped" in out and "data       up to date" not in out


def test_run_without_a_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path), "--until", "data"]) == 2
    assert "names no dataset" in capsys.readouterr().err


def test_one_stage_alone_needs_the_earlier_stages_outputs(movielens_src, tmp_path, capsys):
    args = ["run", "--out", str(tmp_path / "run"), "--set", f"data.movielens_src={movielens_src}"]
    assert main([*args, "--only", "data"]) == 2  # the dataset stage has not run in this directory
    assert "holds no finished 'dataset' stage" in capsys.readouterr().err
    assert main([*args, "--until", "dataset"]) == 0
    capsys.readouterr()
    assert main([*args, "--only", "data"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data       ") and "dataset" not in out and "cf " not in out


def test_every_stage_is_a_module_of_its_own_name():
    import importlib.util

    from jobs.pipeline import STAGES

    for name, target in STAGES.items():
        assert target.split(":")[0] == f"jobs.{name}"
        spec = importlib.util.find_spec(f"jobs.{name}")
        assert spec is not None and spec.origin is not None
        source = Path(spec.origin).read_text()
        assert f'stage_main("{name}", sys.argv[1:])' in source  # python -m jobs.<name> runs that stage
