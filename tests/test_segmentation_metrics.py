"""Per-case segmentation metrics (validate.metrics.segmentation) against answers known independently:

- analytic: squares shifted by k px (HD = HD95 = k·spacing exactly), concentric squares (every distance
  written out in closed form, isotropic and anisotropic spacing), Dice of nested shapes, the exact
  ellipse perimeter 4a·E(e) (scipy.special.ellipe) for the head circumference;
- a naive reference: boundaries by an explicit 4/6-neighbour test and all-pairs distances, on
  rasterised discs;
- scipy's distance transform (``distance_transform_edt`` with ``sampling``) over the whole image, with
  boundaries from scipy's ``binary_erosion``, on random 2D and 3D masks with anisotropic spacing — to
  1e-9 mm;
- MONAI 1.6 (compute_hausdorff_distance, compute_average_surface_distance, compute_surface_dice,
  compute_dice, compute_iou) on random masks, to float32 precision (MONAI returns float32 distances):
  the definitions, percentile convention included, are the maintained library's.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import ellipe

from validate.metrics.segmentation import (
    EmptyPolicy,
    case_metrics,
    mask_ellipse_circumference,
    metric_keys,
    nsd_key,
    policy_text,
    ramanujan_perimeter,
)

TOL_MM = 1e-9


def _square(shape, top, left, side) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


def _blobs(shape, seed, fill) -> np.ndarray:
    """A random mask of smooth blobs (some touching the image border)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return field > np.quantile(field, 1.0 - fill)


# --- analytic answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("axis", [0, 1])
def test_squares_shifted_by_k_pixels_are_k_spacings_apart(k, axis):
    """Two 30-px squares, one shifted by k px along ``axis``: the farthest boundary pixel of either is
    exactly k pixels from the other's boundary, so HD = k·s_axis; at least 30 of the 116 boundary
    pixels each way sit at that maximum, so HD95 (the 95th percentile) is k·s_axis too."""
    spacing = (0.5, 0.25)
    ref = _square((80, 80), 20, 20, 30)
    pred = np.roll(ref, k, axis=axis)
    m = case_metrics(pred, ref, spacing)
    assert m["hd_mm"] == pytest.approx(k * spacing[axis], abs=TOL_MM)
    assert m["hd95_mm"] == pytest.approx(k * spacing[axis], abs=TOL_MM)
    overlap = 30 * (30 - k)
    assert m["dice"] == pytest.approx(2 * overlap / (900 + 900), abs=1e-15)
    assert m["iou"] == pytest.approx(overlap / (1800 - overlap), abs=1e-15)
    assert m["area_ref_mm2"] == pytest.approx(900 * 0.125) and m["area_error_mm2"] == 0.0


@pytest.mark.parametrize(("axis", "k"), [(0, 1), (0, 2), (1, 3), (2, 2)])
def test_cubes_shifted_by_k_voxels_with_anisotropic_spacing(axis, k):
    """3D: a 12-voxel cube shifted by k voxels along ``axis`` is k·s_axis away (HD and HD95)."""
    spacing = (2.5, 0.8, 0.6)
    ref = np.zeros((20, 24, 24), dtype=bool)
    ref[4:16, 6:18, 6:18] = True
    m = case_metrics(np.roll(ref, k, axis=axis), ref, spacing)
    assert m["hd_mm"] == pytest.approx(k * spacing[axis], abs=TOL_MM)
    assert m["hd95_mm"] == pytest.approx(k * spacing[axis], abs=TOL_MM)
    assert m["dice"] == pytest.approx((12 - k) / 12, abs=1e-15)


def test_swapping_prediction_and_reference():
    """Every symmetric metric is unchanged and the signed errors change sign."""
    spacing = (0.4, 0.3)
    a, b = _blobs((50, 60), 1, 0.3), _blobs((50, 60), 2, 0.2)
    kw = {"nsd_tolerances_mm": [1.0], "biometry": "ellipse_circumference"}
    ab, ba = case_metrics(a, b, spacing, **kw), case_metrics(b, a, spacing, **kw)
    for key in ("dice", "iou", "hd_mm", "hd95_mm", "assd_mm", "nsd_1mm", "hc_abs_error_mm"):
        assert ab[key] == pytest.approx(ba[key], abs=1e-12), key
    assert ab["area_error_mm2"] == -ba["area_error_mm2"] != 0
    assert ab["hc_error_mm"] == pytest.approx(-ba["hc_error_mm"])


def _concentric_square_distances(r1, r2, sy, sx):
    """Every boundary distance of a (2r1+1)-px square centred inside a (2r2+1)-px one, written out.

    Inner → outer: from a pixel (y, x) inside the outer square the nearest point of its boundary is the
    foot of the perpendicular on the nearest edge, min((r2 − |y|)·sy, (r2 − |x|)·sx) away (a lattice
    point, so a boundary pixel). Outer → inner: from a pixel outside the inner square the nearest point of
    the inner square is its clamp onto [−r1, r1]², a boundary pixel √((max(0, |y| − r1)·sy)² +
    (max(0, |x| − r1)·sx)²) away."""
    inner, outer = [], []
    for y, x in product(range(-r1, r1 + 1), repeat=2):
        if max(abs(y), abs(x)) == r1:
            inner.append(min((r2 - abs(y)) * sy, (r2 - abs(x)) * sx))
    for y, x in product(range(-r2, r2 + 1), repeat=2):
        if max(abs(y), abs(x)) == r2:
            outer.append(math.hypot(max(0, abs(y) - r1) * sy, max(0, abs(x) - r1) * sx))
    return np.array(inner), np.array(outer)


@pytest.mark.parametrize("spacing", [(0.3, 0.3), (0.5, 0.2), (0.2, 0.7)])
def test_concentric_squares_match_their_closed_form(spacing):
    r1, r2 = 6, 11
    shape = (40, 40)
    ref = _square(shape, 20 - r2, 20 - r2, 2 * r2 + 1)
    pred = _square(shape, 20 - r1, 20 - r1, 2 * r1 + 1)
    sy, sx = spacing
    d_in, d_out = _concentric_square_distances(r1, r2, sy, sx)
    tau = (r2 - r1) * max(sy, sx) + 1e-6
    m = case_metrics(pred, ref, spacing, nsd_tolerances_mm=[tau])
    both = np.concatenate([d_in, d_out])
    assert m["hd_mm"] == pytest.approx((r2 - r1) * math.hypot(sy, sx), abs=TOL_MM)
    assert m["hd_mm"] == pytest.approx(both.max(), abs=TOL_MM)
    assert m["hd95_mm"] == pytest.approx(max(np.percentile(d_in, 95), np.percentile(d_out, 95)), abs=TOL_MM)
    assert m["assd_mm"] == pytest.approx(both.mean(), abs=TOL_MM)
    assert m[nsd_key(tau)] == pytest.approx(np.mean(both <= tau), abs=1e-15)
    a_in, a_out = (2 * r1 + 1) ** 2, (2 * r2 + 1) ** 2
    assert m["dice"] == pytest.approx(2 * a_in / (a_in + a_out), abs=1e-15)
    assert m["iou"] == pytest.approx(a_in / a_out, abs=1e-15)


def test_concentric_squares_isotropic_counts_by_hand():
    """Isotropic, by counting alone: the 8·r1 inner boundary pixels are all Δ away; of the 8·r2 outer
    ones 4·(2r1 + 1) are Δ away (those facing an inner edge) and the corners Δ√2."""
    r1, r2, s = 4, 9, 0.4
    ref = _square((30, 30), 15 - r2, 15 - r2, 2 * r2 + 1)
    pred = _square((30, 30), 15 - r1, 15 - r1, 2 * r1 + 1)
    delta = (r2 - r1) * s
    m = case_metrics(pred, ref, (s, s), nsd_tolerances_mm=[delta])
    assert m[nsd_key(delta)] == pytest.approx((8 * r1 + 4 * (2 * r1 + 1)) / (8 * r1 + 8 * r2), abs=1e-15)
    assert m["hd_mm"] == pytest.approx(delta * math.sqrt(2), abs=TOL_MM)


def test_a_distance_of_exactly_tau_counts_as_within_tau():
    """20 px at 0.1 mm is 2 mm, though 20 × 0.1 is 2.0000000000000004 in binary: NSD@2mm counts it."""
    ref = _square((120, 120), 30, 30, 50)
    pred = np.roll(ref, 20, axis=1)
    m = case_metrics(pred, ref, (0.1, 0.1), nsd_tolerances_mm=[2.0])
    assert m["hd_mm"] == pytest.approx(2.0, abs=TOL_MM)
    assert m["nsd_2mm"] == 1.0


# --- naive and scipy-EDT references -----------------------------------------------------------------


def _naive_surface(mask):
    """Boundary by definition: a foreground element with a face-neighbour outside (or off the image)."""
    out = np.zeros_like(mask)
    for idx in zip(*np.nonzero(mask), strict=True):
        for axis in range(mask.ndim):
            for step in (-1, 1):
                nb = list(idx)
                nb[axis] += step
                if not 0 <= nb[axis] < mask.shape[axis] or not mask[tuple(nb)]:
                    out[idx] = True
    return out


def _all_pairs(a_pts, b_pts):
    diff = a_pts[:, None, :] - b_pts[None, :, :]
    return np.sqrt((diff**2).sum(axis=2)).min(axis=1)


def _reference(pred, ref, spacing, taus, surface_of):
    """hd, hd95, assd and NSD from boundaries given by ``surface_of`` and distances by scipy's EDT."""
    sp, sr = surface_of(pred), surface_of(ref)
    d_pr = ndimage.distance_transform_edt(~sr, sampling=spacing)[sp]
    d_rp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sr]
    both = np.concatenate([d_pr, d_rp])
    out = {
        "hd_mm": both.max(),
        "hd95_mm": max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)),
        "assd_mm": both.mean(),
    }
    out.update({nsd_key(t): np.mean(both <= t) for t in taus})
    return out


def test_concentric_discs_equal_the_naive_grid_answer():
    """Rasterised discs of radius 9 and 14 px: boundaries by the explicit neighbour test, distances by
    all pairs; and the Hausdorff distance is the radius difference to within a pixel's diagonal."""
    s = (0.25, 0.25)
    y, x = np.mgrid[:40, :40] - 19.5
    ref, pred = x**2 + y**2 <= 14**2, x**2 + y**2 <= 9**2
    pts_p = np.argwhere(_naive_surface(pred)) * np.array(s)
    pts_r = np.argwhere(_naive_surface(ref)) * np.array(s)
    d_pr, d_rp = _all_pairs(pts_p, pts_r), _all_pairs(pts_r, pts_p)
    both = np.concatenate([d_pr, d_rp])
    m = case_metrics(pred, ref, s, nsd_tolerances_mm=[1.3])
    assert m["hd_mm"] == pytest.approx(both.max(), abs=TOL_MM)
    assert m["hd95_mm"] == pytest.approx(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)), abs=TOL_MM)
    assert m["assd_mm"] == pytest.approx(both.mean(), abs=TOL_MM)
    assert m["nsd_1p3mm"] == pytest.approx(np.mean(both <= 1.3), abs=1e-15)
    assert abs(m["hd_mm"] - 5 * 0.25) <= math.sqrt(2) * 0.25
    assert m["dice"] == pytest.approx(2 * pred.sum() / (pred.sum() + ref.sum()), abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_random_2d_masks_equal_scipy_edt(seed):
    rng = np.random.default_rng(100 + seed)
    spacing = tuple(rng.uniform(0.1, 1.2, 2))
    ref, pred = _blobs((64, 90), seed, 0.3), _blobs((64, 90), seed + 50, 0.25)
    taus = (0.7311, 2.4142)
    m = case_metrics(pred, ref, spacing, nsd_tolerances_mm=taus)
    expected = _reference(pred, ref, spacing, taus, lambda a: a & ~ndimage.binary_erosion(a))
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=TOL_MM), key
    inter = np.count_nonzero(pred & ref)
    assert m["dice"] == pytest.approx(2 * inter / (pred.sum() + ref.sum()), abs=1e-15)
    assert m["iou"] == pytest.approx(inter / np.count_nonzero(pred | ref), abs=1e-15)


@pytest.mark.parametrize("seed", range(3))
def test_random_3d_masks_equal_scipy_edt_and_the_naive_boundary(seed):
    spacing = (2.5, 0.8, 0.6)
    ref, pred = _blobs((12, 20, 18), seed, 0.3), _blobs((12, 20, 18), seed + 9, 0.3)
    taus = (1.1,)
    m = case_metrics(pred, ref, spacing, nsd_tolerances_mm=taus)
    for key, value in _reference(pred, ref, spacing, taus, _naive_surface).items():
        assert m[key] == pytest.approx(value, abs=TOL_MM), key
    voxel = 2.5 * 0.8 * 0.6
    assert m["volume_ref_mm3"] == pytest.approx(ref.sum() * voxel, rel=1e-12)
    assert m["volume_error_mm3"] == pytest.approx((pred.sum() - ref.sum()) * voxel, rel=1e-12)


# MONAI 1.6 warns about its own internal call of get_mask_edges (a deprecated argument), not about ours
@pytest.mark.filterwarnings("ignore:monai.metrics.utils get_mask_edges:FutureWarning")
@pytest.mark.parametrize("seed", range(4))
def test_random_masks_equal_monai(seed):
    """MONAI's own functions on the same masks, as float32 allows (MONAI casts distances to float32)."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    shape, spacing = ((48, 70), (0.6, 0.35)) if seed % 2 == 0 else ((10, 24, 20), (2.0, 0.7, 0.5))
    ref, pred = _blobs(shape, seed, 0.3), _blobs(shape, seed + 20, 0.3)
    m = case_metrics(pred, ref, spacing, nsd_tolerances_mm=[1.2345])
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    theirs = {
        "dice": compute_dice(p, r, include_background=True),
        "iou": compute_iou(p, r, include_background=True),
        "hd_mm": compute_hausdorff_distance(p, r, spacing=spacing, include_background=True),
        "hd95_mm": compute_hausdorff_distance(p, r, percentile=95, spacing=spacing, include_background=True),
        "assd_mm": compute_average_surface_distance(p, r, symmetric=True, spacing=spacing, include_background=True),
        "nsd_1p2345mm": compute_surface_dice(p, r, [1.2345], spacing=spacing, include_background=True),
    }
    for key, value in theirs.items():
        assert m[key] == pytest.approx(float(value.item()), rel=2e-6, abs=1e-6), key


# --- empty masks ------------------------------------------------------------------------------------


DISTANCES = ("hd_mm", "hd95_mm", "assd_mm")


def test_both_empty_scores_perfect_by_default():
    empty = np.zeros((30, 40), dtype=bool)
    m = case_metrics(empty, empty, (0.5, 0.25), nsd_tolerances_mm=[2.0], biometry="ellipse_circumference")
    assert (m["dice"], m["iou"], m["nsd_2mm"]) == (1.0, 1.0, 1.0)
    assert all(m[k] == 0.0 for k in DISTANCES)
    assert (m["ref_empty"], m["pred_empty"], m["area_ref_mm2"], m["area_pred_mm2"]) == (1.0, 1.0, 0.0, 0.0)
    assert m["hc_abs_error_mm"] == 0.0


def test_both_empty_is_nan_under_exclude():
    empty = np.zeros((30, 40), dtype=bool)
    m = case_metrics(
        empty,
        empty,
        (0.5, 0.25),
        nsd_tolerances_mm=[2.0],
        policy=EmptyPolicy(both="exclude"),
        biometry="ellipse_circumference",
    )
    for key in ("dice", "iou", "nsd_2mm", *DISTANCES, "hc_error_mm", "hc_abs_error_mm"):
        assert math.isnan(m[key]), key
    assert (m["ref_empty"], m["pred_empty"], m["area_error_mm2"]) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("policy", [EmptyPolicy(), EmptyPolicy(both="exclude")])
@pytest.mark.parametrize("which", ["pred", "ref"])
def test_exactly_one_empty_scores_worst_never_nan(policy, which):
    """A missed (or hallucinated) structure: Dice/IoU/NSD 0 and every distance the image diagonal,
    √(15² + 10²) mm for 30 × 40 px at (0.5, 0.25) mm — never NaN, whatever the both-empty policy."""
    shape, spacing = (30, 40), (0.5, 0.25)
    head = _square(shape, 5, 8, 12)
    empty = np.zeros(shape, dtype=bool)
    pred, ref = (empty, head) if which == "pred" else (head, empty)
    m = case_metrics(pred, ref, spacing, nsd_tolerances_mm=[2.0], policy=policy, biometry="ellipse_circumference")
    assert (m["dice"], m["iou"], m["nsd_2mm"]) == (0.0, 0.0, 0.0)
    for key in DISTANCES:
        assert m[key] == pytest.approx(math.sqrt(15**2 + 10**2), abs=1e-12)
    assert not any(math.isnan(v) for v in m.values())
    assert m["pred_empty"] == float(which == "pred") and m["ref_empty"] == float(which == "ref")
    circumference = mask_ellipse_circumference(head, spacing)
    assert m["hc_abs_error_mm"] == pytest.approx(circumference) and circumference > 0
    assert m["hc_error_mm"] == pytest.approx(-circumference if which == "pred" else circumference)


def test_the_worst_distance_exceeds_every_real_distance():
    """Corner pixel against the opposite corner pixel: the largest distance the image allows is still
    below the diagonal a one-empty case scores."""
    shape, spacing = (30, 40), (0.5, 0.25)
    a, b = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    a[0, 0], b[-1, -1] = True, True
    real = case_metrics(a, b, spacing)["hd_mm"]
    worst = case_metrics(a, np.zeros(shape, dtype=bool), spacing)["hd_mm"]
    assert real == pytest.approx(math.hypot(29 * 0.5, 39 * 0.25), abs=TOL_MM)
    assert worst > real


def test_policy_text_states_the_policy():
    perfect, exclude = policy_text(EmptyPolicy()), policy_text(EmptyPolicy(both="exclude"))
    assert "Metrics Reloaded" in perfect and "perfect" in perfect and "diagonal" in perfect
    assert "excluded" in exclude and "perfect" not in exclude
    with pytest.raises(ValueError, match="both"):
        EmptyPolicy(both="ignore")  # type: ignore[arg-type]


# --- head circumference -----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1.0, 0.9, 0.5, 0.2])
def test_ramanujan_perimeter_against_the_elliptic_integral(ratio):
    exact = 4.0 * ellipe(1.0 - ratio**2)  # a = 1: 4a·E(e), scipy's E takes m = e²
    tol = 1e-9 if ratio >= 0.5 else 1e-5
    assert ramanujan_perimeter(1.0, ratio) == pytest.approx(exact, rel=tol)


@pytest.mark.parametrize(
    ("a_mm", "b_mm", "angle", "spacing"),
    [(24.0, 18.0, 0.5, (0.2, 0.2)), (30.0, 21.0, 1.2, (0.15, 0.25)), (10.0, 10.0, 0.0, (0.1, 0.1))],
)
def test_ellipse_circumference_of_a_rasterised_ellipse(a_mm, b_mm, angle, spacing):
    """An ellipse drawn in mm on a (possibly anisotropic) pixel grid: the moments ellipse's perimeter is
    the drawn one's 4a·E(e) to within 0.2 %."""
    sy, sx = spacing
    h, w = int(80 / sy), int(80 / sx)
    yy, xx = np.mgrid[:h, :w]
    y, x = yy * sy - 40.0, xx * sx - 40.0
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x * c + y * s) / a_mm, (-x * s + y * c) / b_mm
    mask = u**2 + v**2 <= 1.0
    exact = 4.0 * a_mm * ellipe(1.0 - (b_mm / a_mm) ** 2)
    assert mask_ellipse_circumference(mask, spacing) == pytest.approx(exact, rel=2e-3)
    m = case_metrics(mask, mask, spacing, biometry="ellipse_circumference")
    assert m["hc_ref_mm"] == pytest.approx(exact, rel=2e-3) and m["hc_error_mm"] == 0.0


def test_one_pixel_mask_has_the_circumference_of_its_moments():
    """A single s × s pixel has variance s²/12 per axis → a = b = s/√3, perimeter 2π·s/√3."""
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    assert mask_ellipse_circumference(mask, (0.3, 0.3)) == pytest.approx(2 * math.pi * 0.3 / math.sqrt(3))
    assert mask_ellipse_circumference(np.zeros((5, 5), dtype=bool), (0.3, 0.3)) == 0.0


# --- keys and input checks --------------------------------------------------------------------------


def test_keys_2d_and_3d():
    two = case_metrics(
        _square((20, 20), 4, 4, 8),
        _square((20, 20), 5, 5, 8),
        (1.0, 1.0),
        nsd_tolerances_mm=[2.0, 1.5],
        biometry="ellipse_circumference",
    )
    assert list(two) == [
        "dice",
        "iou",
        "hd_mm",
        "hd95_mm",
        "assd_mm",
        "nsd_2mm",
        "nsd_1p5mm",
        "area_ref_mm2",
        "area_pred_mm2",
        "area_error_mm2",
        "ref_empty",
        "pred_empty",
        "hc_ref_mm",
        "hc_pred_mm",
        "hc_error_mm",
        "hc_abs_error_mm",
    ]
    cube = np.zeros((6, 6, 6), dtype=bool)
    cube[1:4, 1:4, 1:4] = True
    three = case_metrics(cube, cube, (1.0, 1.0, 2.0))
    assert list(three) == list(metric_keys(3))
    assert {"volume_ref_mm3", "volume_pred_mm3", "volume_error_mm3"} <= set(three)
    assert three["volume_ref_mm3"] == 54.0 and three["dice"] == 1.0 and three["hd_mm"] == 0.0
    assert (nsd_key(2.0), nsd_key(1.5), nsd_key(0.25)) == ("nsd_2mm", "nsd_1p5mm", "nsd_0p25mm")


@pytest.mark.parametrize(
    ("pred_shape", "spacing", "kwargs", "match"),
    [
        ((20, 21), (1.0, 1.0), {}, "differ in shape"),
        ((20, 20), (1.0,), {}, "spacing"),
        ((20, 20), (1.0, 0.0), {}, "spacing"),
        ((20, 20), (1.0, float("nan")), {}, "spacing"),
        ((20, 20), (1.0, 1.0), {"biometry": "femur_length"}, "unknown biometry"),
        ((20, 20), (1.0, 1.0), {"nsd_tolerances_mm": [0.0]}, "NSD tolerance"),
    ],
)
def test_bad_inputs_are_refused(pred_shape, spacing, kwargs, match):
    with pytest.raises(ValueError, match=match):
        case_metrics(np.zeros(pred_shape, bool), np.zeros((20, 20), bool), spacing, **kwargs)


def test_a_probability_map_is_not_taken_for_a_mask():
    """0/1 integers are a mask; a probability map or a label image (values 0 and 255) is refused."""
    ref = _square((20, 20), 4, 4, 8)
    as_int = case_metrics(ref.astype(np.uint8), ref, (1.0, 1.0))
    assert as_int["dice"] == 1.0
    with pytest.raises(ValueError, match="predicted mask must be boolean or 0/1"):
        case_metrics(ref * 0.3, ref, (1.0, 1.0))
    with pytest.raises(ValueError, match="reference mask must be boolean or 0/1"):
        case_metrics(ref, ref.astype(np.uint8) * 255, (1.0, 1.0))


def test_biometry_is_2d_only():
    with pytest.raises(ValueError, match="2D"):
        case_metrics(np.ones((3, 4, 4), bool), np.ones((3, 4, 4), bool), (1, 1, 1), biometry="ellipse_circumference")
