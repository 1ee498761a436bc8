"""docs/benchmarks.md is generated from benchmarks/results/: CI fails when the committed page is stale."""

from benchmarks import report


def test_the_committed_benchmark_page_is_generated_from_the_results():
    assert report.DOCS.read_text() == report.render(), (
        "docs/benchmarks.md differs from benchmarks/results/*.json: run `tailormind bench report`"
    )


def test_every_results_file_becomes_a_section_with_its_machine():
    page = report.render()
    for path in sorted(report.RESULTS_DIR.glob("*.json")):
        if path.name.endswith("_core_shares.json"):
            continue
        assert f"## {path.stem}" in page
    assert page.count("Measured ") >= len(list(report.RESULTS_DIR.glob("*.json"))) - 1
