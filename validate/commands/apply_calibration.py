"""``validate apply-calibration PREDICTIONS --calibration calibration.json --method M --out OUT``.

Rebuilds method M from the fitted parameters in a Calibration JSON (written by ``validate calibrate``
or a results bundle) and writes the predictions table with calibrated scores: ``p`` / ``p_<class>`` /
``p_<label>`` hold the calibrated probabilities and ``logit`` / ``logit_<...>`` their logits
(binary and multilabel: logit(p); multiclass: log p; both after the 1e-15 floor). Every other column
is kept as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from validate.errors import EXIT_OK, InputError

NAME = "apply-calibration"
HELP = "apply a fitted calibration method from a calibration.json to a predictions table"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", metavar="PREDICTIONS", help="predictions table (.parquet or .csv)")
    parser.add_argument("--calibration", required=True, metavar="JSON", help="Calibration JSON with fitted parameters")
    parser.add_argument("--method", required=True, metavar="M", help="which fitted method to apply")
    parser.add_argument("--out", required=True, metavar="OUT", help="calibrated predictions (.parquet or .csv)")


def load_calibration(path: Path) -> dict:
    if not path.exists():
        raise InputError(
            "calibration file not found", file=path, expected="a Calibration JSON (validate calibrate --json)"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputError(
            f"not valid JSON ({exc.__class__.__name__})", file=path, line=line, expected="a Calibration JSON"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("methods"), dict) or "task" not in doc:
        raise InputError(
            "not a Calibration JSON: `task` and `methods` are missing",
            file=path,
            expected='{"task": ..., "methods": {"<method>": {"params": ...}}}',
        )
    return doc


def run(args: argparse.Namespace) -> int:
    from validate.calibrators import calibrator_from_json
    from validate.numerics import log_probability, logit
    from validate.predictions import read_predictions, write_predictions

    path = Path(args.calibration)
    doc = load_calibration(path)
    task = doc["task"]
    methods = doc["methods"]
    method = args.method
    if method not in methods:
        import difflib

        near = difflib.get_close_matches(method, list(methods), n=1)
        raise InputError(
            f"method {method!r} is not in the calibration file" + (f"; did you mean {near[0]!r}?" if near else ""),
            file=path,
            field="--method",
            expected=f"one of {', '.join(methods)}",
        )
    spec = methods[method]
    names = doc.get("classes") if task == "multiclass" else doc.get("labels") if task == "multilabel" else None
    table = read_predictions(
        args.predictions,
        task=task,
        class_names=names if task == "multiclass" else None,
        label_names=names if task == "multilabel" else None,
    )
    if names is not None and list(table.names or []) != list(names):
        raise InputError(
            f"the predictions' {'classes' if task == 'multiclass' else 'labels'} {table.names} differ "
            f"from the calibration's {names}",
            file=args.predictions,
            field="columns",
            expected=f"score columns for {names}, in that order",
        )
    frame = table.frame.copy()
    if method == "none":
        probs = table.probabilities()
    else:
        if spec.get("params") is None:
            raise InputError(
                f"method {method!r} has no fitted parameters" + (f" ({spec['error']})" if spec.get("error") else ""),
                file=path,
                field=f"methods.{method}.params",
                expected="a method that was fitted",
            )
        k = len(names) if names is not None else (2 if task == "binary" else None)
        if task == "multiclass" and k is None:
            k = len(table.names)
        cal = calibrator_from_json(method, task, spec["params"], n_classes=k)
        z = table.logits()
        probs = cal.predict_proba(z)
    if task == "binary":
        frame["p"] = probs
        frame["logit"] = logit(probs)
    else:
        for j, nm in enumerate(table.names):
            frame[f"p_{nm}"] = probs[:, j]
            frame[f"logit_{nm}"] = log_probability(probs[:, j]) if task == "multiclass" else logit(probs[:, j])
    write_predictions(frame, Path(args.out))
    print(f"applied {method} to {len(frame)} case(s); wrote {args.out}", file=sys.stderr)
    return EXIT_OK
