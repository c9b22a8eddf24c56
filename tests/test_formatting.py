"""The one number formatter (validate/formatting.py): expected texts written by hand from the
conventions in its docstring, never produced by the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from validate import formatting as F
from validate.metrics import registry


@pytest.mark.parametrize(
    ("value", "metric", "text"),
    [
        (0.8123, None, "0.812"),
        (0.8125, "auroc", "0.812"),  # Python rounds half to even on the binary value: 0.8125 is exact
        (0.81251, "auroc", "0.813"),
        (-1.11e-07, None, "0.000"),  # rounding noise: never -1.11e-07 nor -0.000
        (-1.11e-07, "calibration_intercept", "0.000"),
        (-0.0001, "auroc", "-0.00010"),  # above the noise floor: small but real, two significant digits
        (0.0004, "ece", "0.00040"),  # the ECE: not 0.000 (perfect) and not 0.0004 in one place only
        (0.00043, "ece", "0.00043"),
        (0.0005, "ece", "0.001"),  # rounds to a non-zero value at 3 decimals: the metric's precision
        (0.0, "ece", "0.000"),
        (12.345, "interventions_avoided", "12.3"),  # registry: digits=1
        (12.345, "interventions_avoided@0.1", "12.3"),  # a decision item names its metric's head
        (0.1234, "hosmer_lemeshow.p_value", "0.123"),
        (123456.7, None, "123,457"),
        (12345.0, None, "12345.000"),  # a float stays a measurement (only integers are counts)
        (np.int64(12345), None, "12,345"),
        (7, "ece", "7"),
        (None, None, "—"),
        (float("nan"), None, "—"),
        (np.float64("inf"), None, "—"),
        ("not a number", None, "not a number"),
    ],
)
def test_format_value(value, metric, text):
    assert F.format_value(value, metric) == text


def test_digits_come_from_the_registry():
    assert registry.get("interventions_avoided").digits == 1
    assert F.metric_digits("interventions_avoided") == 1
    assert F.metric_digits("auroc") == 3
    assert F.metric_digits("no_such_metric") == F.DEFAULT_DIGITS == 3
    assert F.format_value(0.5, digits=2) == "0.50"


@pytest.mark.parametrize(
    ("est", "lo", "hi", "metric", "text"),
    [
        (0.8123, 0.7712, 0.8499, "auroc", "0.812 (0.771–0.850)"),
        (-0.02, -0.0512, 0.011, None, "-0.020 (-0.051 to 0.011)"),  # a negative bound: "to", not a dash
        (0.0004, 0.0001, 0.0012, "ece", "0.00040 (0.00010–0.00120)"),  # one precision for all three
        (0.5, None, 0.6, None, "0.500"),
        (None, 0.1, 0.2, None, "—"),
        (0.1, -1e-9, 0.2, None, "0.100 (0.000–0.200)"),  # noise at a bound: 0, and no "-0.000 to"
        (12.34, 10.0, 15.55, "interventions_avoided", "12.3 (10.0–15.6)"),
    ],
)
def test_format_interval(est, lo, hi, metric, text):
    assert F.format_interval(est, lo, hi, metric) == text


def test_format_entry_reads_bundle_entries():
    assert F.format_entry({"estimate": 0.8421, "ci_low": 0.8012, "ci_high": 0.879}, "auroc") == "0.842 (0.801–0.879)"
    assert F.format_entry({"estimate": None, "reason": "no events"}) == "— (no events)"
    assert F.format_entry({"estimate": None}) == "—"
    assert F.format_entry({"statistic": 3.2, "p_value": 0.07}) == "3.200"
    assert F.format_entry(0.25) == "0.250"


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (1e-30, "< 0.001"),  # never 0.000000… nor 1e-30
        (0.0, "< 0.001"),
        (0.00099, "< 0.001"),
        (0.001, "0.001"),
        (0.0423, "0.042"),
        (0.5, "0.500"),
        (1.0, "1.000"),
        (1.0000000002, "1.000"),  # a p-value over 1 by rounding reads 1
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_format_p(p, text):
    assert F.format_p(p) == text


def test_counts_have_thousands_separators():
    from validate import charts
    from validate.gates import _n_text

    assert F.format_count(1234567) == "1,234,567"
    assert F.format_count(np.int32(40)) == "40"
    assert F.format_count(None) == "—"
    assert F.format_count({"a": 3}) == "{'a': 3}"  # a per-class map stays as it was
    assert charts.n_text(12345, 1234) == "n=12,345, 1,234 events"
    assert _n_text(12345, 1234) == "12,345 (1,234)"


def test_declared_numbers_read_as_written():
    assert F.format_declared(0.65) == "0.65"
    assert F.format_declared(40.0) == "40"
    assert F.format_declared(1e-5) == "1e-05"
    assert F.format_declared(None) == "—"


def test_a_gate_value_never_reads_equal_to_a_threshold_it_differs_from():
    # 0.0504 > 0.05 fails a max gate: "0.050 > 0.05" would contradict the verdict
    assert F.format_beside(0.0504, 0.05, "ece") == "0.0504"
    assert F.format_beside(0.052, 0.05, "ece") == "0.052"
    assert F.format_beside(0.7999, 0.8, "auroc") == "0.7999"
    assert F.format_beside(0.8, 0.8, "auroc") == "0.800"
    assert F.format_beside(None, 0.8) == "—"


def test_no_scientific_notation_nor_long_zero_runs_over_a_sweep():
    """Every value from 1e-12 to 1e9, either sign: no exponent, no run of more than six zeros after
    the point, and the text parses back within half a unit of its last decimal (no silent change)."""
    for exp in np.linspace(-12, 9, 211):
        for sign in (1, -1):
            x = sign * float(10**exp)
            text = F.format_value(x, "ece")
            assert "e" not in text.lower() and "0000000" not in text, (x, text)
            back = float(text.replace(",", ""))
            decimals = len(text.split(".")[1]) if "." in text else 0
            assert math.isclose(back, x, abs_tol=max(0.5 * 10**-decimals, F.NOISE_FLOOR) + 1e-12), (x, text)


# ---- one ECE, the same text on every surface -------------------------------------------------------

SMALL_ECE = {"estimate": 0.0004, "ci_low": 0.0001, "ci_high": 0.0012}
#: written by hand: two significant digits for a small real value, one precision for the three numbers
SMALL_ECE_TEXT = "0.00040 (0.00010–0.00120)"


def _metrics_json() -> dict:
    block = {"n": 1200, "n_events": 300, "auroc": {"estimate": 0.81, "ci_low": 0.78, "ci_high": 0.84}}
    return {
        "task": "binary",
        "ci_level": 0.95,
        "n_bootstrap": 200,
        "seed": 0,
        "overall": dict(block, ece=SMALL_ECE),
        "sites": {"a": dict(block, ece=SMALL_ECE)},
    }


def test_cli_report_dashboard_and_gates_show_the_same_small_ece_the_same_way():
    from dashboard import data, tables
    from validate.commands.metrics import format_table
    from validate.contract import Block
    from validate.gates import judge_gates
    from validate.report.render import _block_cell

    metrics = _metrics_json()
    cli = format_table(metrics)
    assert SMALL_ECE_TEXT in cli and "1,200" in cli

    report_cell, _ = _block_cell(Block.model_validate(metrics["sites"]["a"]), "ece")
    assert report_cell == SMALL_ECE_TEXT

    run = data.Run(path=".", name="r", identity="r", provenance={}, metrics=metrics, protocol={})
    display, _, _ = tables.site_table(run)
    assert display.loc[display["Site"] == "a", "ECE"].iloc[0] == SMALL_ECE_TEXT

    report = judge_gates([{"metric": "ece", "scope": "each_site", "max": 0.05, "on": "estimate"}], metrics)
    row = report.rows[0]
    assert row.reason == "ece estimate 0.00040 <= 0.05"
    assert SMALL_ECE_TEXT in report.to_markdown(ci_level=0.95)


def test_dashboard_tables_show_p_values_and_noise_through_the_formatter():
    import pandas as pd

    from dashboard import ui

    frame = pd.DataFrame({"p_value": [1e-30, 0.0423], "effect": [-1.11e-07, 0.25], "ece_mean": [0.0004, 0.05]})
    shown = ui.readable(frame)
    text = shown.to_html()
    assert "< 0.001<" in text and "0.042" in text and "0.00040" in text
    assert "e-" not in text and "000000" not in text and "-0.000" not in text
    assert shown.data["p_value"].iloc[0] == 1e-30  # the cells keep their numbers (sort, CSV)
