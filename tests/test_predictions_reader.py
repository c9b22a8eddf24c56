"""One predictions reader (issue #13): PredictionsTable hands every analysis its labels, probabilities,
ranking scores and logits, and nothing else reads the label or score columns by name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from validate.predictions import PredictionsTable, as_table, table_from_frame

ROOT = Path(__file__).resolve().parents[1]


def _binary(given: str) -> pd.DataFrame:
    z = np.array([-3.0, 0.0, 1.5, 40.0, 38.0, -0.5])
    df = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(6)],
            "site": ["a", "a", "a", "b", "b", "b"],
            "y": [0, 0, 1, 1, 1, 0],
            "age": [50, 60, 70, 40, 45, 80],
        }
    )
    if given == "logit":
        df["logit"] = z
    else:
        df["p"] = special.expit(z)
    return df


def test_binary_arrays_from_logits():
    t = table_from_frame(_binary("logit"), task="binary")
    z = np.array([-3.0, 0.0, 1.5, 40.0, 38.0, -0.5])
    np.testing.assert_array_equal(t.labels(), [0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    assert t.labels().dtype == np.float64
    np.testing.assert_array_equal(t.probabilities(), special.expit(z))
    np.testing.assert_array_equal(t.logits(), z)
    # ranking: the logits, which keep 38 < 40 apart where sigmoid rounds both to 1.0
    np.testing.assert_array_equal(t.scores(), z)
    assert t.probabilities()[3] == t.probabilities()[4] == 1.0 and t.scores()[3] > t.scores()[4]


def test_binary_arrays_from_probabilities():
    t = table_from_frame(_binary("p"), task="binary")
    p = special.expit(np.array([-3.0, 0.0, 1.5, 40.0, 38.0, -0.5]))
    np.testing.assert_array_equal(t.probabilities(), p)
    np.testing.assert_array_equal(t.scores(), p)
    q = np.clip(p, 1e-15, 1 - 1e-15)
    np.testing.assert_allclose(t.logits(), special.logit(q), rtol=1e-12)


def test_multiclass_arrays():
    z = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [60.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    df = pd.DataFrame({"y": [0, 1, 0, 2], **{f"logit_{c}": z[:, j] for j, c in enumerate(["zeta", "alpha", "mu"])}})
    t = table_from_frame(df, task="multiclass", class_names=["zeta", "alpha", "mu"])
    assert t.labels().dtype == np.int64
    np.testing.assert_allclose(t.probabilities(), special.softmax(z, axis=1), rtol=1e-15)
    np.testing.assert_array_equal(t.logits(), z)
    # one-vs-rest log-odds: log(p_k / (1 - p_k)), distinct where p_k rounds to 1.0
    s = t.scores()
    assert s[2, 0] > s[3, 0] and t.probabilities()[2, 0] == t.probabilities()[3, 0] == 1.0
    np.testing.assert_allclose(s[:2], special.logit(special.softmax(z[:2], axis=1)), rtol=1e-12)
    # probabilities given alone: kept as given (not renormalised), log-probabilities as logits
    P = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    tp = table_from_frame(
        pd.DataFrame({"y": [0, 1], **{f"p_{c}": P[:, j] for j, c in enumerate("abc")}}), task="multiclass"
    )
    np.testing.assert_array_equal(tp.probabilities(), P)
    np.testing.assert_array_equal(tp.scores(), P)
    np.testing.assert_allclose(tp.logits(), np.log(np.clip(P, 1e-15, 1.0)), rtol=0)


def test_multilabel_arrays_per_label():
    df = pd.DataFrame(
        {"y_edema": [0, 1, 1], "y_nodule": [1, 0, 0], "logit_edema": [-1.0, 2.0, 0.5], "p_nodule": [0.9, 0.2, 0.0]}
    )
    t = table_from_frame(df, task="multilabel")
    assert t.names == ["edema", "nodule"]
    np.testing.assert_array_equal(t.labels(), [[0, 1], [1, 0], [1, 0]])
    np.testing.assert_array_equal(t.probabilities()[:, 0], special.expit([-1.0, 2.0, 0.5]))
    np.testing.assert_array_equal(t.probabilities()[:, 1], [0.9, 0.2, 0.0])
    np.testing.assert_array_equal(t.scores()[:, 0], [-1.0, 2.0, 0.5])
    np.testing.assert_allclose(t.logits()[:, 1], special.logit(np.clip([0.9, 0.2, 0.0], 1e-15, 1 - 1e-15)))


def test_site_views_and_attributes():
    t = table_from_frame(_binary("logit"), task="binary")
    b = t.site("b")
    assert len(b) == 3 and list(b.case_ids) == ["c3", "c4", "c5"]
    np.testing.assert_array_equal(b.scores(), [40.0, 38.0, -0.5])
    assert [(s, len(x)) for s, x in t.by_site()] == [("a", 3), ("b", 3)]
    assert [s for s, _ in t.by_site(["b", "nowhere", "a"])] == ["b", "a"]
    g = t.with_attributes(pd.DataFrame({"band": ["x", "y", "x", "y", "x", "y"]}, index=range(10, 16)))
    assert list(g.frame["band"]) == ["x", "y", "x", "y", "x", "y"] and "band" in g.attribute_columns()
    assert "band" not in t.frame  # the original is untouched
    with pytest.raises(ValueError):
        t.with_attributes(pd.DataFrame({"logit": np.zeros(6)}))
    k = g.keep_attributes(["band"])
    assert k.attribute_columns() == ["band"]
    np.testing.assert_array_equal(k.scores(), t.scores())


def test_as_table_parses_a_frame_once_and_passes_a_table_through():
    t = as_table(_binary("p"), task="binary")
    assert isinstance(t, PredictionsTable) and t.given == "p"
    assert as_table(t) is t
    with pytest.raises(ValueError):
        as_table(t, task="multiclass")


def test_analyses_read_a_table_and_a_frame_alike():
    """site_curves, cohort_summary and confident_errors take a PredictionsTable or a frame: same result."""
    from types import SimpleNamespace

    from validate.analysis.cases import confident_errors
    from validate.analysis.sites import cohort_summary, site_curves
    from validate.io import to_json_text
    from validate.metrics import MetricSettings

    rng = np.random.default_rng(5)
    n = 120
    df = pd.DataFrame({"site": np.repeat(["a", "b"], n // 2), "y": rng.integers(0, 2, n), "logit": rng.normal(0, 2, n)})
    t = table_from_frame(df, task="binary")
    settings = MetricSettings(n_bootstrap=20)
    assert to_json_text(site_curves(t, task="binary", names=[], settings=settings)) == to_json_text(
        site_curves(df, task="binary", names=[], settings=settings)
    )
    proto = SimpleNamespace(
        task="binary", subgroups=[], sites=[SimpleNamespace(id=s, display_name=s, role="external") for s in "ab"]
    )
    assert cohort_summary(t, proto) == cohort_summary(df, proto)
    a, _ = confident_errors(t, task="binary", per_site=3)
    b, _ = confident_errors(df, task="binary", per_site=3)
    pd.testing.assert_frame_equal(a, b)
    assert np.allclose(a["probability"], special.expit(t.frame.set_index("case_id").loc[a["case_id"], "logit"]))


def test_shift_multiclass_uses_the_table_class_order():
    """Class indices refer to the protocol's class order; shift once named them (and ordered the EM
    prior's probability columns) alphabetically, which mislabelled every class when the order differed."""
    from validate.analysis.shift import shift_report

    rng = np.random.default_rng(31)
    classes = ["zeta", "alpha", "mu"]  # not alphabetical
    means = np.array([-2.0, 0.0, 2.0])

    def site(name, prior, n):
        y = rng.choice(3, n, p=prior)
        x = rng.normal(means[y], 1.0)
        logits = -0.5 * (x[:, None] - means[None, :]) ** 2
        return pd.DataFrame({"site": name, "y": y, **{f"logit_{c}": logits[:, j] for j, c in enumerate(classes)}})

    df = pd.concat([site("dev", [1 / 3] * 3, 3000), site("skewed", [0.7, 0.2, 0.1], 2000)], ignore_index=True)
    rep = shift_report(
        table_from_frame(df, task="multiclass", class_names=classes),
        dev_sites="dev",
        external_sites="skewed",
        attributes=None,
    )
    skewed = rep["sites"]["skewed"]
    assert list(skewed["scores"]) == classes
    mix = skewed["labels"]["class_mix"]
    counts = np.bincount(df.loc[df.site == "skewed", "y"], minlength=3)
    # levels are sorted names; each name must count the cases whose index points at it
    assert dict(zip(mix["levels"], mix["site"]["counts"], strict=True)) == {
        c: int(k) for c, k in zip(classes, counts, strict=True)
    }
    assert np.allclose(skewed["prior_shift"]["site_prior"], counts / counts.sum())
    assert np.allclose(skewed["prior_shift"]["em"]["prior"], [0.7, 0.2, 0.1], atol=0.04)


# ---- the house rule: one reader, one definition ------------------------------------------------------

READER = "validate/predictions.py"
SCORE, SCORE_PREFIX = {"logit", "p"}, ("logit_", "p_")
LABEL, LABEL_PREFIX = {"y"}, ("y_",)
# where labels are checked too: the analyses and the dashboard read the predictions; elsewhere "y" is a
# common key (the scorer's manifest labels, a calibrator's knots, a metrics job)
LABELS_CHECKED = ("validate/analysis/", "dashboard/")
# reads of a "p" that is not a predictions column: curves.json's lowess smooth ({"p": [...], "observed": [...]})
# and the Cases table that confident_errors returns (its "p" column)
NOT_PREDICTIONS = {
    "validate/charts.py",
    "dashboard/views/cases.py",
    "validate/scoring/segmentation.py",  # writes pixel_sample.parquet (pixel logits), not the predictions
    "validate/analysis/segmentation_pixels.py",  # reads pixel_sample.parquet (pixel logits), not the predictions
}


def _sources():
    for folder in ("validate", "dashboard"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def _names_a_column(node, names, prefixes) -> bool:
    """A constant in ``names`` or an f-string starting with one of ``prefixes``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in names
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value).startswith(prefixes)
    return False


def _column_reads(text: str, names, prefixes):
    """Lines that read a column of ``names``/``prefixes`` by name: ``x["logit"]`` / ``x[f"p_{c}"]``
    (loads, not stores) and ``"logit" in x``."""
    for node in ast.walk(ast.parse(text)):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _names_a_column(node.slice, names, prefixes)
        ):
            yield node.lineno
        elif (
            isinstance(node, ast.Compare)
            and _names_a_column(node.left, names, prefixes)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
        ):
            yield node.lineno


def test_nothing_else_reads_score_columns_by_name():
    """PredictionsTable is the only reader of the predictions' labels and scores; writers (the scorer
    producing the table, apply-calibration) only store columns."""
    offenders = []
    for rel, text in _sources():
        if rel == READER or rel in NOT_PREDICTIONS:
            continue
        lines = text.splitlines()
        found = set(_column_reads(text, SCORE, SCORE_PREFIX))
        if rel.startswith(LABELS_CHECKED):
            found |= set(_column_reads(text, LABEL, LABEL_PREFIX))
        offenders += [f"{rel}:{i}: {lines[i - 1].strip()}" for i in sorted(found)]
    assert not offenders, "read through PredictionsTable instead:\n" + "\n".join(offenders)


def test_one_definition_of_the_floor_and_the_transforms():
    defs = re.compile(
        r"^def (logit|_logit|sigmoid|_sigmoid|softmax|log_softmax|log_sigmoid|wilson_interval|"
        r"_clip_logit|_clip_log|one_vs_rest_log_odds)\(",
        re.M,
    )
    floors = re.compile(r"^\s*\w*(FLOOR|EPS)\w*\s*=\s*1e-15\b", re.M)
    found = [
        (rel, m.group(0).strip()) for rel, text in _sources() for pat in (defs, floors) for m in pat.finditer(text)
    ]
    assert {rel for rel, _ in found} == {"validate/numerics.py"}, found
