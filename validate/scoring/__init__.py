"""Scoring: checkpoints x cases -> the predictions table (DESIGN.md).

- :mod:`.checkpoints` detects and loads checkpoint formats safely.
- :mod:`.inputs` reads images, DICOM, arrays and feature columns and preprocesses them.
- :mod:`.evaluator` is the batch engine (device, autocast, workers, progress).
- :mod:`.cache` keeps finished shards so that a re-run or a killed run resumes.
- :mod:`.distributed` spreads shards over torchrun processes.
- :mod:`.pipeline` ties them together: :func:`score_protocol` -> :class:`ScoreResult`.

Imports are lazy so that ``import validate.scoring.evaluator`` needs only torch, numpy and Pillow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["score_protocol", "ScoreResult", "load_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("score_protocol", "ScoreResult"):
        from validate.scoring import pipeline

        return getattr(pipeline, name)
    if name == "load_checkpoint":
        from validate.scoring.checkpoints import load_checkpoint

        return load_checkpoint
    raise AttributeError(name)
