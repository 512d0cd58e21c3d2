"""Run reports: one self-contained HTML page per run (``veil report RUN``)."""

from veil.report.html import REPORT, build_html, render_report

__all__ = ["REPORT", "build_html", "render_report"]
