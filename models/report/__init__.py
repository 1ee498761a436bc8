"""The run report: what it shows (``data``), the posts' totals and sample (``posts``), the page."""

from models.report.data import ReportData, read_run
from models.report.posts import PostTotals
from models.report.render import render_report

__all__ = ["PostTotals", "ReportData", "read_run", "render_report"]
