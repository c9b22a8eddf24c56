"""The report's "Across hospitals" section: a table and a forest plot per pooled metric of
metrics.json["synthesis"] (hand-made, tests/synthesis_fixture.py, on the dashboard fixture bundle), the
prediction interval explained, none for k < 3 with the reason, and no section without a synthesis."""

from __future__ import annotations

import json
import re

import pytest
import synthesis_fixture as fx

from validate.bundle import Bundle
from validate.report.render import render_report

from test_dashboard_data import write_fixture_run


def _report(tmp_path, synthesis: dict | None) -> str:
    folder = write_fixture_run(tmp_path / "run")
    if synthesis is not None:
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps(fx.with_synthesis(metrics, synthesis)))
    return render_report(Bundle(path=folder))


def _section(html: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def _figures(html: str) -> int:
    return int(re.search(r'<meta name="validate-figures" content="(\d+)">', html).group(1))


def _rows(section: str) -> list[list[str]]:
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", section, re.S):
        rows.append([re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)])
    return [r for r in rows if r]


def test_across_hospitals_section_shows_each_pooled_metric_with_its_prediction_interval(tmp_path):
    without = _report(tmp_path / "a", None)
    html = _report(tmp_path / "b", fx.all_sites())
    section = _section(html, "synthesis")
    assert "<h2>5.2 Across hospitals</h2>" in html
    # after the per-site calibration, before the subgroups
    assert html.index('id="calibration"') < html.index('id="synthesis"') < html.index('id="subgroups"')
    assert '<a href="#synthesis">Across hospitals</a>' in html
    rows = {r[0]: r for r in _rows(section)}
    assert rows["AUROC"][1:7] == [
        "3",
        "0.801 (0.612–0.911)",
        "0.203–0.986",
        "0.052 (logit)",
        "27%",
        "2.74 (p = 0.254)",
    ]
    assert "gamma n=20 (6) insufficient" in rows["AUROC"][7] and "alpha n=40 (20)" in rows["AUROC"][7]
    # the fourth pooled metric, net benefit minus treat all at t = 0.2: a tiny tau² keeps its digits
    nb_gain = _rows(section)[3]
    assert nb_gain[0].endswith("at threshold 0.2") and nb_gain[4] == "0.00040 (identity)"  # two significant digits
    # one forest plot per pooled metric, each captioned with what the prediction interval means
    assert _figures(html) - _figures(without) == 4
    assert section.count('class="figure validate-figure"') == 4
    assert section.count("where the next hospital&#x27;s value is expected to lie, 95%") == 4


def test_fewer_than_three_sites_give_no_prediction_interval_and_the_reason(tmp_path):
    section = _section(_report(tmp_path, fx.external()), "synthesis")
    rows = {r[0]: r for r in _rows(section)}
    assert rows["AUROC"][1] == "2"
    assert rows["AUROC"][3] == "none: k = 2 &lt; 3 sites: no prediction interval"
    assert "No prediction interval: k = 2 &lt; 3 sites" in section
    assert "Bar below it" not in section  # no caption describes a prediction interval that is not drawn


def test_no_section_without_a_synthesis(tmp_path):
    html = _report(tmp_path, None)
    assert 'id="synthesis"' not in html and "Across hospitals" not in html


# ---- a real heart run ---------------------------------------------------------------------------------


def heart_synthesis_run(folder, out=None):
    """A `validate run` of the four UCI heart hospitals (the shipped model's predictions, 20 replicates,
    synthesis of the external sites: tests/test_synthesis.py's protocol) into ``out`` (default
    ``folder/run``); the bundle's folder and the predictions."""
    import validate

    from conftest import REPO
    from test_comparison import heart_frames
    from test_synthesis import HEART_PROTOCOL

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "heart.yaml"
    path.write_text(HEART_PROTOCOL.format(heart=REPO / "sample_sites" / "heart"))
    new, _ = heart_frames()
    new.drop(columns=["sex"]).to_csv(folder / "pred.csv", index=False, float_format="%.17g")
    out = out if out is not None else folder / "run"
    validate.run_protocol(path, out=out, predictions=folder / "pred.csv")
    return out, new


@pytest.mark.slow
def test_a_real_heart_run_shows_its_synthesis_and_each_sites_auroc(tmp_path):
    from sklearn.metrics import roc_auc_score

    from validate import charts

    bundle, predictions = heart_synthesis_run(tmp_path)
    metrics = json.loads((bundle / "metrics.json").read_text())
    auroc = metrics["synthesis"]["metrics"]["auroc"]
    html = render_report(Bundle(path=bundle))
    section = _section(html, "synthesis")
    rows = {r[0]: r for r in _rows(section)}
    assert rows["AUROC"][1] == "3"
    assert rows["AUROC"][2] == charts.entry_text(auroc)
    # the prediction interval as shown reads back as metrics.json's bounds (to the shown precision)
    shown_low, shown_high = (float(x) for x in rows["AUROC"][3].split("–"))
    assert shown_low == pytest.approx(auroc["pi_low"], abs=5e-4) and shown_low > 0
    assert shown_high == pytest.approx(auroc["pi_high"], abs=5e-4)
    assert section.count('class="figure validate-figure"') == len(metrics["synthesis"]["metrics"])
    # the forest's site rows: each hospital's AUROC as scikit-learn computes it from the predictions;
    # the development site (cleveland) shown, not pooled, the external sites pooled, in role order
    roles = {"cleveland": "development", "hungary": "external", "switzerland": "external", "va": "external"}
    fig = charts.synthesis_forest_figure(metrics, "auroc", roles=roles)
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext, strict=True))
    drawn = {}
    for t in fig.data:
        if t.mode == "markers" and t.marker.symbol in ("square", "square-open", "circle-open"):
            drawn.update({ticks[y].split(" · ")[0]: (x, t.marker.symbol) for x, y in zip(t.x, t.y, strict=True)})
    for site, frame in predictions.groupby("site"):
        assert drawn[site][0] == pytest.approx(roc_auc_score(frame["y"], frame["logit"]), abs=1e-9), site
    assert drawn["cleveland"][1] == "circle-open"
    assert [ticks[y] for y in (0, 1, 2, 3)][0] == "cleveland · development (not pooled)"
    (diamond,) = [t for t in fig.data if t.fill == "toself"]
    assert (min(diamond.x), max(diamond.x)) == (auroc["ci_low"], auroc["ci_high"])
