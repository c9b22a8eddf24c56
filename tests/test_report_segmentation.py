"""The report of a segmentation run (hand-made bundle, tests/segmentation_fixture.py): its own sections in
place of the classification ones, every number as the bundle holds it, the empty-mask policy, the worst
cases' overlays (outlines where the fixture drew the discs; over the bundle's picture when it has one),
pixel calibration and area agreement; a classification report is unchanged."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import segmentation_fixture as fx
from PIL import Image

from validate.bundle import Bundle
from validate.report.render import render_report

from test_dashboard_data import write_fixture_run

GREEN = (0x00, 0x9E, 0x73)
VERMILLION = (0xD5, 0x5E, 0x00)


def _report(tmp_path, **kw) -> str:
    return render_report(Bundle(path=fx.write_segmentation_run(tmp_path / "run", **kw)))


def _section(html: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def _rows(section: str) -> list[list[str]]:
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", section, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        if cells:
            rows.append(cells)
    return rows


def _figures(html: str) -> int:
    return int(re.search(r'<meta name="validate-figures" content="(\d+)">', html).group(1))


def _images(section: str) -> list[np.ndarray]:
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)"', section)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in found]


def test_segmentation_report_has_its_sections_in_place_of_the_classification_ones(tmp_path):
    html = _report(tmp_path)
    anchors = re.findall(r'<section id="([^"]+)">', html)
    assert anchors == [
        "verdict",
        "provenance",
        "cohorts",
        "segmentation",
        "segmentation-worst",
        "segmentation-calibration",
        "segmentation-area",
        "shift",
        "limitations",
    ]
    for title in ("Segmentation", "Worst cases", "Pixel calibration", "Area agreement"):
        assert f">{title}</a>" in html
    # the Dice gate's failing site leads the verdict
    assert _rows(_section(html, "verdict"))[0][:3] == ["FAIL", "dice-each-site", "site probe_b"]


def test_site_tables_show_each_mean_and_median_with_its_interval(tmp_path):
    section = _section(_report(tmp_path), "segmentation")
    rows = _rows(section)
    headline = {r[0]: r for r in rows[:5]}
    assert set(headline) == {*fx.SITES, "all sites (pooled)"}
    for site, (n, patients, dice, hd95, small) in fx.RESULTS.items():
        block = fx.block(site)
        median = block["dice_median"]
        assert headline[site][1] == f"{n} ({patients})" + (" insufficient" if small else "")
        assert headline[site][2] == f"{dice[0]:.3f} ({dice[1]:.3f}–{dice[2]:.3f})"
        assert headline[site][3] == f"{median['estimate']:.3f} ({median['ci_low']:.3f}–{median['ci_high']:.3f})"
        assert headline[site][4].startswith(f"{hd95[0]:.2f}") or headline[site][4].startswith(f"{hd95[0]:.3f}")
    # the other metrics' means in a second table, NSD named by its tolerance
    heads = re.findall(r"<th>(.*?)</th>", section)
    assert "NSD @ 2 mm: mean (95% CI)" in heads and "IoU: mean (95% CI)" in heads
    assert "Metrics Reloaded" in section and "Empty masks." in section  # the policy, stated
    assert "resamples patients within the site (200 replicates)" in section


def test_baseline_comparison_is_shown_only_when_the_run_had_one(tmp_path):
    with_baseline = _report(tmp_path / "a")
    section = _section(with_baseline, "segmentation")
    assert "Against the baseline (baseline)" in section
    delta = [r for r in _rows(section) if r[0] in ("probe_b", "all sites (pooled)") and len(r) == 4]
    assert delta == [
        ["probe_b", "80", "0.021 (0.012–0.030)", "-0.41 (-0.72 to -0.12)"],
        ["all sites (pooled)", "298", "0.021 (0.012–0.030)", "-0.41 (-0.72 to -0.12)"],
    ]
    assert "new − baseline: mean over matched cases of the per-case difference" in section
    without = _report(tmp_path / "b", comparison=False)
    assert "Against the baseline" not in _section(without, "segmentation")
    # two forests (Dice, HD95), a reliability diagram, a temperature plot, area agreement; two difference forests
    assert _figures(without) == 5 and _figures(with_baseline) == 7


def test_worst_cases_show_both_outlines_where_the_masks_are(tmp_path):
    section = _section(_report(tmp_path), "segmentation-worst")
    case_ids = re.findall(r'data-case="([^"]+)"', section)
    assert case_ids == [c for rows in fx.WORST.values() for c, *_ in rows]  # lowest Dice first, per site
    images = _images(section)
    assert len(images) == 8
    # probe_b's worst case: the reference disc centred, the prediction 18 px to the right (scale 2)
    img = images[case_ids.index("pb-0003")]
    assert img.shape == (fx.OVERLAY_HEIGHT * 2, fx.OVERLAY_WIDTH * 2, 3)
    cy, cx, r = fx.OVERLAY_HEIGHT // 2, fx.OVERLAY_WIDTH // 2, 30
    assert tuple(img[2 * cy, 2 * (cx - r)]) == GREEN  # the reference's leftmost point
    assert tuple(img[2 * cy, 2 * (cx + 18 + r)]) == VERMILLION  # the prediction's rightmost point
    assert tuple(img[2 * cy, 2 * cx]) == (40, 40, 40)  # no picture in the bundle: the blank frame
    assert "Dice 0.412 · HD95 19.8 mm" in section


def test_worst_cases_are_drawn_over_the_bundles_own_pictures(tmp_path):
    images = _images(_section(_report(tmp_path, thumbnails=True), "segmentation-worst"))
    cy, cx = fx.OVERLAY_HEIGHT // 2, fx.OVERLAY_WIDTH // 2
    assert all(tuple(img[2 * cy, 2 * cx]) == (90, 90, 90) for img in images)  # the fixture's grey picture


def test_a_missing_or_unreadable_overlay_is_said_not_drawn_blank(tmp_path):
    folder = fx.write_segmentation_run(tmp_path / "run")
    frame = fx.overlays_frame()
    frame.loc[frame["case_id"] == "pb-0003", "pred"] = b"\x00"  # a truncated mask
    frame[frame["case_id"] != "lr-0011"].to_parquet(folder / "overlays.parquet", index=False)
    section = _section(render_report(Bundle(path=folder)), "segmentation-worst")
    assert len(_images(section)) == 6
    assert section.count("overlay unreadable") == 1 and section.count("no overlay kept") == 1


def test_pixel_calibration_and_area_agreement_tables(tmp_path):
    html = _report(tmp_path)
    pixels = {r[0]: r for r in _rows(_section(html, "segmentation-calibration"))}
    for site, (ece, before, after) in fx.PIXEL_ECE.items():
        n = fx.RESULTS[site][0]
        assert pixels[site][1] == f"{ece[0]:.4f} ({ece[1]:.4f}–{ece[2]:.4f})"
        assert pixels[site][2:] == [f"{20 * 1000 * n:,}", str(n), f"{before:.4f}", f"{after:.4f}"]
    assert "T = 1.370" in _section(html, "segmentation-calibration")
    area = {r[0]: r for r in _rows(_section(html, "segmentation-area"))}
    md, lo, hi, slope, icpt = fx.AREA["probe_b"]
    assert area["probe_b"][1:6] == ["80", f"{md:.1f}", f"{lo:.1f} to {hi:.1f}", f"{slope:.3f}", f"{icpt:.1f}"]
    assert "Mean difference (mm²)" in _section(html, "segmentation-area")


def test_classification_report_has_no_segmentation_section(tmp_path):
    html = render_report(Bundle(path=write_fixture_run(tmp_path / "run")))
    assert 'id="segmentation' not in html and 'id="discrimination"' in html


def test_sections_say_why_a_pixel_analysis_is_missing_and_name_a_volume(tmp_path):
    import json

    folder = fx.write_segmentation_run(tmp_path / "run")
    info = json.loads((folder / "segmentation.json").read_text())
    why = "no pixel histograms (pixel_histogram.parquet) came with the predictions"
    info["pixel_calibration"] = {"bins": 20, "sites": {}, "reason": why}
    info["temperature"] = None
    info["area_agreement"] |= {"quantity": "volume", "unit": "mm³"}
    (folder / "segmentation.json").write_text(json.dumps(info))
    html = render_report(Bundle(path=folder))
    calibration = _section(html, "segmentation-calibration")
    assert f"Pixel ECE not computed: {why}." in calibration and "No temperature scaling" in calibration
    volume = _section(html, "segmentation-area")
    assert "5.1 Volume agreement" in html and "Mean difference (mm³)" in volume and "(mm²)" not in volume


def test_several_labels_get_a_table_and_figures_each(tmp_path):
    import json

    folder = fx.write_segmentation_run(tmp_path / "run")
    metrics = json.loads((folder / "metrics.json").read_text())
    for key, block in [("overall", metrics["overall"]), *metrics["sites"].items()]:
        brain = fx.block("probe_b") | {"n": block["n"], "n_patients": block["n_patients"]}
        labelled = {"n": block["n"], "n_patients": block["n_patients"], "labels": {"head": block, "brain": brain}}
        if key == "overall":
            metrics["overall"] = labelled
        else:
            metrics["sites"][key] = labelled
    (folder / "metrics.json").write_text(json.dumps(metrics))
    info = json.loads((folder / "segmentation.json").read_text())
    info["labels"] = ["head", "brain"]
    info["area_agreement"]["unit"] = "mm2"  # the ASCII unit segstats writes, shown as mm²
    (folder / "segmentation.json").write_text(json.dumps(info))
    html = render_report(Bundle(path=folder))
    section = _section(html, "segmentation")
    assert "<h3>Label head</h3>" in section and "<h3>Label brain</h3>" in section
    brain_rows = _rows(section[section.index("<h3>Label brain</h3>") :])
    assert brain_rows[0][:3] == ["development", "120 (110)", "0.873 (0.851–0.894)"]  # probe_b's numbers
    assert "Mean difference (mm²)" in _section(html, "segmentation-area")
