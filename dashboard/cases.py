"""The most confident errors per site: the ranking lives in :mod:`validate.analysis.cases`, shared with
``validate run`` (which stores thumbnails of the same cases in the bundle)."""
from validate.analysis.cases import attribute_columns, confident_errors

__all__ = ["attribute_columns", "confident_errors"]
