"""The Streamlit dashboard: a thin, read-only view of results bundles (DESIGN.md).

It never re-scores a model and never recomputes a statistic or draws a figure of its own: numbers
come from the bundle's JSON files, figures from :mod:`validate.charts` (shared with the HTML report).
Start it with ``validate dashboard RUNS_DIR`` or ``streamlit run dashboard/app.py -- RUNS_DIR``.
"""
