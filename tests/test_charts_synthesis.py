"""The across-hospitals forest plot (validate.charts.synthesis_forest_figure) on hand-made synthesis
sections (tests/synthesis_fixture.py): what it draws is what metrics.json says, site inputs transformed
back with scipy as the independent reference, the prediction interval apart from the diamond, and no
prediction interval for k < 3 with the reason shown."""

from __future__ import annotations

import math

import pytest
import synthesis_fixture as fx
from scipy.special import expit
from scipy.stats import norm

from validate import charts

from test_dashboard_data import metrics_json

Z = norm.ppf(0.975)
ROLES = {"alpha": "development", "beta": "external", "gamma": "external"}


def _metrics(synthesis: dict) -> dict:
    return fx.with_synthesis(metrics_json(), synthesis)


def _traces(fig, name_part: str) -> list:
    return [t for t in fig.data if t.name and name_part in t.name]


def _text_column(fig) -> dict:
    """y position -> the text shown in the right-hand column."""
    col = next(t for t in fig.data if t.mode == "text")
    return dict(zip(col.y, col.text, strict=True))


def _ticks(fig) -> dict:
    return dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext, strict=True))


def test_site_rows_are_the_synthesis_inputs_transformed_back_in_role_order():
    metrics = _metrics(fx.all_sites())
    roles = {"alpha": "external", "beta": "development", "gamma": "calibration"}
    fig = charts.synthesis_forest_figure(metrics, "auroc", roles=roles)
    ticks = _ticks(fig)
    assert [ticks[y] for y in (0, 1, 2)] == ["beta · development", "gamma · calibration", "alpha · external"]
    points = {}
    for t in fig.data:
        if t.type == "scatter" and t.mode == "markers":
            for x, y, plus, minus in zip(t.x, t.y, t.error_x.array, t.error_x.arrayminus, strict=True):
                points[ticks[y]] = (x, x - minus, x + plus)
    for site, (auc, se_c, *_) in fx.AUROC.items():
        theta, se = math.log(auc / (1 - auc)), se_c / (auc * (1 - auc))
        label = f"{site} · {roles[site]}"
        assert points[label] == pytest.approx((expit(theta), expit(theta - Z * se), expit(theta + Z * se)), abs=1e-12)
    # n and events on every site row
    text = _text_column(fig)
    assert "n=40 (20)" in text[0] and "n=20 (6)" in text[1]


def test_log_scale_inputs_are_exponentiated():
    fig = charts.synthesis_forest_figure(_metrics(fx.all_sites()), "oe_ratio", roles=ROLES)
    ticks = _ticks(fig)
    inputs = {i["site"]: i for i in fx.all_sites()["metrics"]["oe_ratio"]["inputs"]}
    seen = 0
    for t in fig.data:
        if t.mode == "markers":
            for x, y in zip(t.x, t.y, strict=True):
                site = ticks[y].split(" · ")[0]
                assert x == pytest.approx(math.exp(inputs[site]["theta"]), abs=1e-12)
                seen += 1
    assert seen == 3


def test_diamond_spans_the_pooled_ci_and_the_prediction_interval_is_a_separate_bar():
    synthesis = fx.all_sites()
    entry = synthesis["metrics"]["auroc"]
    fig = charts.synthesis_forest_figure(_metrics(synthesis), "auroc", roles=ROLES)
    (diamond,) = [t for t in fig.data if t.fill == "toself"]
    assert min(diamond.x) == entry["ci_low"] and max(diamond.x) == entry["ci_high"]
    apex = [x for x, y in zip(diamond.x, diamond.y, strict=True) if y != diamond.y[0]]
    assert apex == [entry["estimate"], entry["estimate"]]
    (pi,) = _traces(fig, "prediction interval")
    assert list(pi.x) == [entry["pi_low"], entry["pi_high"]]
    # its own row, below the diamond, in a colour no other trace uses
    assert pi.y[0] > diamond.y[0]
    assert pi.line.color != diamond.line.color
    assert all(pi.line.color not in (t.marker.color, t.line.color) for t in fig.data if t is not pi)
    text = _text_column(fig)
    assert text[pi.y[0]] == "PI 0.203–0.986"
    assert text[diamond.y[0]].startswith("0.801 (0.612–0.911)")
    # k, tau² and I² in the title
    assert (
        "k = 3" in fig.layout.title.text
        and "τ² = 0.052" in fig.layout.title.text
        and "I² = 27%" in fig.layout.title.text
    )


def test_k_below_three_draws_no_prediction_interval_and_says_why():
    synthesis = fx.external()
    fig = charts.synthesis_forest_figure(_metrics(synthesis), "auroc", roles=ROLES)
    assert _traces(fig, "prediction interval") == []
    assert any(t.fill == "toself" for t in fig.data)
    text = _text_column(fig)
    assert "PI none: k = 2 < 3 sites: no prediction interval" in text.values()
    caption = charts.synthesis_caption(synthesis, "auroc")
    assert "No prediction interval: k = 2 < 3 sites" in caption
    assert "expected to lie" not in caption


def test_caption_explains_the_prediction_interval_and_carries_k_tau2_i2():
    caption = charts.synthesis_caption(fx.all_sites(), "auroc")
    assert "where the next hospital's value is expected to lie, 95%" in caption
    assert "k = 3" in caption and "τ² = 0.052 (logit scale)" in caption and "I² = 27%" in caption
    assert "REML" in caption and "Hartung–Knapp–Sidik–Jonkman" in caption


def test_insufficient_site_is_pooled_but_drawn_hollow_and_labelled():
    fig = charts.synthesis_forest_figure(_metrics(fx.all_sites()), "auroc", roles=ROLES)
    ticks = _ticks(fig)
    (small,) = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "square-open"]
    assert [ticks[y] for y in small.y] == ["gamma · external"]
    assert "insufficient" in _text_column(fig)[small.y[0]]


def test_a_site_outside_the_synthesis_shows_its_own_entry_as_not_pooled():
    # external synthesis: alpha (development) is not pooled; its row shows its own block's interval,
    # the net-benefit family read from the block's decision item at t = 0.2
    metrics = _metrics(fx.external())
    fig = charts.synthesis_forest_figure(metrics, "net_benefit_vs_treat_all@0.2", roles=ROLES)
    ticks = _ticks(fig)
    assert ticks[0] == "alpha · development (not pooled)"
    (unpooled,) = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "circle-open"]
    gain, se = fx.NB_GAIN["alpha"]
    assert unpooled.x[0] == pytest.approx(gain)
    assert unpooled.x[0] - unpooled.error_x.arrayminus[0] == pytest.approx(gain - 1.96 * se)
    assert "not pooled" in _text_column(fig)[0]
    assert fig.layout.xaxis.title.text.endswith("at threshold 0.2")
    # the reference line of the net-benefit gain is 0
    assert any(s.x0 == 0.0 and s.x1 == 0.0 for s in fig.layout.shapes)


def test_nothing_is_drawn_without_a_synthesis():
    fig = charts.synthesis_forest_figure(metrics_json(), "auroc")
    assert not [t for t in fig.data if t.mode != "text"] and "No synthesis" in fig.layout.annotations[0].text
    assert charts.synthesis_metrics(metrics_json()) == []
    assert charts.synthesis_metrics(_metrics(fx.all_sites())) == [
        "auroc",
        "calibration_slope",
        "oe_ratio",
        "net_benefit_vs_treat_all@0.2",
    ]


def test_a_chosen_site_left_out_says_why_and_roles_come_from_the_inputs():
    synthesis = fx.all_sites()
    slope = synthesis["metrics"]["calibration_slope"]
    slope["inputs"] = [dict(i, role="external") for i in slope["inputs"] if i["site"] != "gamma"]
    slope["excluded"] = [{"site": "gamma", "reason": "calibration slope undefined at gamma (no se)"}]
    slope["k"] = 2
    # no roles argument: the roles recorded with the inputs order and label the rows
    fig = charts.synthesis_forest_figure(_metrics(synthesis), "calibration_slope")
    ticks, text = _ticks(fig), _text_column(fig)
    assert ticks[0] == "alpha · external" and ticks[1] == "beta · external"
    assert ticks[2] == "gamma (not pooled)"
    assert text[2].endswith("not pooled: calibration slope undefined at gamma (no se)")


def test_one_site_gives_a_point_without_a_diamond_and_the_reason():
    synthesis = fx.external()
    auroc = synthesis["metrics"]["auroc"]
    auroc["inputs"] = auroc["inputs"][:1]
    reason = "k = 1 site: no between-site interval (HKSJ has k − 1 = 0 degrees of freedom)"
    auroc.update(k=1, estimate=0.743, ci_low=None, ci_high=None, reason=reason)
    fig = charts.synthesis_forest_figure(_metrics(synthesis), "auroc", roles=ROLES)
    assert not [t for t in fig.data if t.fill == "toself"]
    (point,) = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "diamond-open"]
    assert list(point.x) == [0.743]
    assert _text_column(fig)[point.y[0]] == f"0.743 (no CI: {reason})  k=1"


def test_the_hand_made_synthesis_is_shaped_as_the_bundle_contract():
    from validate.contract import Synthesis

    for synthesis in (fx.all_sites(), fx.external()):
        Synthesis.model_validate(synthesis)


def test_a_prediction_interval_far_wider_than_the_sites_runs_to_the_edge_with_an_arrow():
    # as on the heart external sites: with k = 3 (t with 1 df) the interval spans nearly all of 0..1
    synthesis = fx.all_sites()
    synthesis["metrics"]["auroc"].update(pi_low=0.000431, pi_high=0.99997)
    fig = charts.synthesis_forest_figure(_metrics(synthesis), "auroc", roles=ROLES)
    (pi,) = _traces(fig, "prediction interval")
    left, right = fig.layout.xaxis.range
    # sites span 0.386 (gamma's lower bound) to 0.948 (alpha's upper): the axis keeps them readable
    assert 0.000431 < left < 0.386 and right > 0.99997
    assert pi.x[0] == left and list(pi.marker.symbol) == ["triangle-left", "line-ns"]
    assert pi.x[1] == 0.99997
    # the true interval stays in the text column
    assert _text_column(fig)[pi.y[0]] == "PI 0.00043–0.99997"


def test_a_ratio_is_drawn_on_a_log_axis():
    fig = charts.synthesis_forest_figure(_metrics(fx.all_sites()), "oe_ratio", roles=ROLES)
    assert fig.layout.xaxis.type == "log"
    # labelled with plain ratios inside the drawn range (the range is in log10 units)
    left, right = (10**v for v in fig.layout.xaxis.range)
    assert list(fig.layout.xaxis.ticktext) == [f"{t:g}" for t in fig.layout.xaxis.tickvals]
    assert 1 in fig.layout.xaxis.tickvals and all(left <= t <= right for t in fig.layout.xaxis.tickvals)
    (pi,) = _traces(fig, "prediction interval")
    assert list(pi.x) == [0.29, 3.61] and list(pi.marker.symbol) == ["line-ns", "line-ns"]
