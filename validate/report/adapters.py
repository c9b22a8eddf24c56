"""Moved to :mod:`validate.view` (the one module of bundle-view helpers both presentations import).

Temporary alias while dashboard/figures.py still imports it from here; remove it once that import
reads ``from validate import view``.
"""
from validate.view import sample_size_rows, transfer_matrix

__all__ = ["sample_size_rows", "transfer_matrix"]
