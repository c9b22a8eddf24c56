"""The segmentation figures and overlays (validate.charts_segmentation) on the hand-made fixture bundle
(tests/segmentation_fixture.py): every drawn number is the bundle's, checked against the fixture's own
constants; the overlay outlines against hand-drawn squares."""

from __future__ import annotations

import io

import numpy as np
import pytest
import segmentation_fixture as fx
from PIL import Image

from validate import charts_segmentation as seg

SITES = list(fx.SITES)
GREEN = (0x00, 0x9E, 0x73)
VERMILLION = (0xD5, 0x5E, 0x00)


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_packed_masks_unpack_to_the_pixels_numpy_packed():
    rng = np.random.default_rng(3)
    mask = rng.random((86, 127)) < 0.3  # 86 x 127 = 10922 bits: the last byte is padded
    packed = np.packbits(mask).tobytes()
    assert np.array_equal(seg.unpack_mask(packed, 86, 127), mask)
    with pytest.raises(ValueError, match="cannot hold"):
        seg.unpack_mask(packed, 200, 200)


def test_outline_of_a_square_is_its_border():
    mask = np.zeros((40, 50), bool)
    mask[10:30, 20:40] = True  # a 20 x 20 square: 4 * 20 - 4 = 76 border pixels
    edge = seg.outline(mask)
    assert edge.sum() == 76
    assert edge[10, 20:40].all() and edge[29, 20:40].all() and edge[10:30, 20].all() and edge[10:30, 39].all()
    assert not edge[11:29, 21:39].any()
    # a mask touching the frame: the frame's edge is a boundary
    assert seg.outline(np.ones((3, 3), bool)).sum() == 8


def test_overlay_draws_reference_green_and_prediction_vermillion_over_the_picture():
    ref = np.zeros((40, 50), bool)
    ref[10:30, 10:30] = True
    pred = np.zeros((40, 50), bool)
    pred[10:30, 20:40] = True  # the same square moved 10 pixels right
    blank = _rgb(seg.overlay_png(ref, pred, scale=1))
    assert blank.shape == (40, 50, 3)
    assert tuple(blank[20, 10]) == GREEN  # the reference's left edge
    assert tuple(blank[20, 39]) == VERMILLION  # the prediction's right edge
    assert tuple(blank[10, 20]) == VERMILLION  # both top edges meet: the prediction is drawn on top
    assert tuple(blank[20, 15]) == (40, 40, 40)  # inside: the dark frame, no fill
    # over a picture: its grey values show through between the outlines (resized to the masks)
    picture = io.BytesIO()
    Image.fromarray(np.full((80, 100), 200, np.uint8)).save(picture, format="PNG")
    over = _rgb(seg.overlay_png(ref, pred, picture.getvalue(), scale=2))
    assert over.shape == (80, 100, 3)
    assert tuple(over[40, 30]) == (200, 200, 200) and tuple(over[40, 20]) == GREEN
    # an unreadable picture leaves the outlines on the blank frame
    assert np.array_equal(_rgb(seg.overlay_png(ref, pred, b"not a png", scale=1)), blank)


def test_labels_of_nsd_tolerances_and_medians():
    assert seg.metric_label("nsd_2mm") == "NSD @ 2 mm"
    assert seg.metric_label("nsd_1p5mm") == "NSD @ 1.5 mm"
    assert seg.metric_label("dice_median").endswith(" median")
    assert seg.lower_is_better("hd95_mm") and seg.lower_is_better("hd95_mm_median")
    assert not seg.lower_is_better("dice")
    block = fx.block("control")
    assert seg.block_metrics(block) == [
        "dice",
        "iou",
        "nsd_2mm",
        "hd95_mm",
        "hd_mm",
        "assd_mm",
        "area_abs_error_mm2",
    ]
    assert seg.block_metrics({"nsd_5mm": {"estimate": 1}, "nsd_1p5mm": {"estimate": 1}}) == ["nsd_1p5mm", "nsd_5mm"]


def test_forest_plots_each_sites_mean_with_its_interval_and_n():
    metrics = fx.metrics_json()
    for metric, k in (("dice", 2), ("hd95_mm", 3)):
        fig = seg.segmentation_forest(metrics, metric, SITES, "")
        shown = {}
        for trace in fig.data:
            if trace.mode == "markers" and trace.x is not None:
                arrays = trace.error_x
                for i, site in enumerate(trace.y):
                    shown[site] = (trace.x[i], trace.x[i] - arrays.arrayminus[i], trace.x[i] + arrays.array[i])
        for site in SITES:
            est, lo, hi = fx.RESULTS[site][k]
            assert shown[site] == pytest.approx((est, lo, hi)), (metric, site)
        text = " ".join(t for tr in fig.data if tr.mode == "text" for t in tr.text)
        assert "n=18 insufficient" in text and "n=120" in text and "all sites (pooled)" in fig.data[-1].y


def test_several_labels_read_each_labels_block():
    head, brain = fx.block("control"), fx.block("probe_b")
    metrics = fx.metrics_json()
    metrics["sites"] = {"control": {"n": 80, "labels": {"head": head, "brain": brain}}}
    metrics["overall"] = {"n": 80, "labels": {"head": head, "brain": brain}}
    assert seg.labels_of(metrics) == ["head", "brain"]
    rows = seg.site_metric_rows(metrics, ["control"], "brain")
    assert rows[0]["entries"]["dice"] == brain["dice"] and rows[1]["site"] == "all sites (pooled)"


def test_pixel_reliability_and_temperature_draw_the_bundles_numbers():
    info = fx.segmentation_json()
    fig = seg.pixel_reliability_figure(info, SITES, "head")
    by_site = {t.name.split(" ")[0]: t for t in fig.data if t.name != "perfect calibration"}
    assert set(by_site) == set(SITES)
    bins = info["pixel_calibration"]["sites"]["probe_b"]["head"]["reliability"]
    assert list(by_site["probe_b"].x) == [b["mean_p"] for b in bins]
    assert list(by_site["probe_b"].y) == [b["frac_pos"] for b in bins]
    assert "0.0487 (0.0421–0.0560)" in by_site["probe_b"].name
    temp = seg.temperature_figure(info, SITES, "head")
    assert "T = 1.370" in temp.layout.title.text
    assert {t.y[0]: tuple(t.x) for t in temp.data} == {s: (b, a) for s, (_, b, a) in fx.PIXEL_ECE.items()}


def test_area_agreement_bars_are_the_limits_of_agreement():
    fig = seg.area_agreement_figure(fx.segmentation_json(), SITES, "head")
    for trace in fig.data:
        md, lo, hi, *_ = fx.AREA[trace.y[0]]
        assert trace.x[0] == md
        assert trace.x[0] - trace.error_x.arrayminus[0] == pytest.approx(lo)
        assert trace.x[0] + trace.error_x.array[0] == pytest.approx(hi)


def test_comparison_window_holds_every_interval_and_zero():
    info = fx.segmentation_json()
    fig = seg.comparison_figure(info, "dice", SITES)
    low, high = fig.layout.xaxis.range
    assert low < 0 < 0.030 < high  # Dice differences 0.012 to 0.030: the line of no difference stays in view
    assert "n=120" in " ".join(fig.data[-1].text) and "all sites (pooled)" in fig.data[-1].y  # n matched
    assert seg.comparison_metrics(info) == ["dice", "hd95_mm"]


def test_figures_without_their_section_say_so():
    for build in (seg.pixel_reliability_figure, seg.temperature_figure, seg.area_agreement_figure):
        fig = build({}, SITES, "head")
        assert fig.data == () and "No " in fig.layout.annotations[0].text
