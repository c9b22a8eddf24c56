"""validate: external validation and calibration suite.

The pipeline and its stages are importable from here, e.g. ``validate.run_protocol(...)`` (see
:mod:`validate.pipeline`). They are loaded on first use (:func:`__getattr__`, PEP 562): ``import
validate`` imports no numerical library, so the command line and tools that only need the version or a
stage stay fast to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "run_protocol": "validate.pipeline",
    "RunResult": "validate.pipeline",
    "load_predictions": "validate.pipeline",
    "analyse": "validate.pipeline",
    "write_bundle": "validate.pipeline",
    "regate": "validate.pipeline",
    "compare_bundles": "validate.pairing",
    "load_protocol": "validate.protocol",
    "read_predictions": "validate.predictions",
    "score_protocol": "validate.scoring",
    "metrics_report": "validate.metrics",
    "compare_calibration": "validate.calibrators",
    "judge_gates": "validate.gates",
    "read_bundle": "validate.bundle",
}

__all__ = [
    "__version__",
    "run_protocol",
    "RunResult",
    "load_predictions",
    "analyse",
    "write_bundle",
    "regate",
    "compare_bundles",
    "load_protocol",
    "read_predictions",
    "score_protocol",
    "metrics_report",
    "compare_calibration",
    "judge_gates",
    "read_bundle",
]

if TYPE_CHECKING:  # what a type checker and an editor see; at run time :func:`__getattr__` loads them
    from validate.bundle import read_bundle
    from validate.calibrators import compare_calibration
    from validate.gates import judge_gates
    from validate.metrics import metrics_report
    from validate.pairing import compare_bundles
    from validate.pipeline import RunResult, analyse, load_predictions, regate, run_protocol, write_bundle
    from validate.predictions import read_predictions
    from validate.protocol import load_protocol
    from validate.scoring import score_protocol


def __getattr__(name: str) -> Any:
    """Load a public name of the package from its module on first use (then cached in the package)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'validate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
