"""The self-contained HTML report of a results bundle (:func:`render_report`, :func:`write_report`)."""

from validate.report.render import render_report, write_report

__all__ = ["render_report", "write_report"]
