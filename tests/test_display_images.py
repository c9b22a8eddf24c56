"""One decoder of images for display (validate.thumbnails.thumbnail_png): the dashboard shows a case
as the bundle's thumbnail and scoring's reader show it.

For DICOMs that scoring reads specially (MONOCHROME1 inverted after a rescale, a VOI window, a PALETTE
COLOR lookup), the expected display pixels are computed here from pydicom's own transforms
(``apply_modality_lut``, ``apply_voi_lut``, ``apply_color_lut``) and the display rule written out
(8-bit values kept; values outside 0..scale stretched from their minimum to their maximum). The
dashboard's picture of the site's image, the picture the run stores in the bundle, and the dashboard's
picture of that stored PNG must all equal it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from test_dashboard_data import write_fixture_run
from test_scoring_inputs import _dicom, _palette_dicom

SHAPE = (96, 80)  # within a thumbnail and above half of it: neither reduced nor enlarged


def _pixels(png: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as im:
        return np.asarray(im)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Minimum to 0, maximum to 255, rounded half to even (the display rule for values beyond scale)."""
    v = values.astype(np.float64)
    return np.rint((v - v.min()) / (v.max() - v.min()) * 255.0).astype(np.uint8)


def _monochrome1_rescaled(path: Path) -> np.ndarray:
    px = np.random.default_rng(21).integers(0, 4096, SHAPE).astype(np.uint16)
    _dicom(path, px, photometric="MONOCHROME1", bits=12, slope=2.0, intercept=-100.0)
    ds = pydicom.dcmread(path)
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)  # no window in the file: unchanged
    # MONOCHROME1: the lowest value is displayed white (PS3.3 C.7.6.3.1.2)
    return _stretch(shown.max() - shown)


def _windowed(path: Path) -> np.ndarray:
    px = np.random.default_rng(22).integers(0, 256, SHAPE).astype(np.uint8)
    _dicom(path, px, center=100, width=80)
    ds = pydicom.dcmread(path)
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=False)  # onto 0..255
    return np.rint(shown).astype(np.uint8)


def _palette(path: Path) -> np.ndarray:
    rng = np.random.default_rng(23)
    indices = rng.integers(0, 256, SHAPE).astype(np.uint8)
    _palette_dicom(path, indices, [rng.integers(0, 256, 256) for _ in range(3)], 8)
    ds = pydicom.dcmread(path)
    return apply_color_lut(ds.pixel_array, ds).astype(np.uint8)


CASES = {
    "monochrome1-rescale": (_monochrome1_rescaled, 1),
    "voi-window": (_windowed, 1),
    "palette-colour": (_palette, 3),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_dashboard_bundle_and_scoring_show_a_special_dicom_alike(tmp_path, kind):
    from dashboard.data import image_spec, load_run, thumbnail
    from validate.thumbnails import thumbnail_name, thumbnail_png

    make, channels = CASES[kind]
    runs, root = tmp_path / "runs", tmp_path / "images" / "gamma"
    bundle = write_fixture_run(runs / "b", image_root=root)
    protocol = bundle / "protocol.yaml"
    protocol.write_text(
        protocol.read_text().replace(
            "input: {kind: tabular, features: [x]}",
            f"input: {{kind: dicom, size: [16, 16], channels: {channels}, scale: 255.0}}",
        )
    )
    expected = make(root / "case.dcm")
    run = load_run(bundle, runs)

    # the dashboard, from the site's image folder (no thumbnail of this case in the bundle)
    live = _pixels(thumbnail(run, "gamma", "gamma-000", "case.dcm"))
    np.testing.assert_array_equal(live, expected)
    # the bundle's thumbnail, as validate run writes it
    stored = thumbnail_png(root / "case.dcm", image_spec(run), roots=[root])
    np.testing.assert_array_equal(_pixels(stored), expected)
    # and the dashboard showing that stored thumbnail: the same pixels, not resampled
    (bundle / "thumbnails" / "gamma").mkdir(parents=True)
    (bundle / "thumbnails" / "gamma" / f"{thumbnail_name('gamma-001')}.png").write_bytes(stored)
    np.testing.assert_array_equal(_pixels(thumbnail(run, "gamma", "gamma-001", None)), expected)


def test_the_display_decoder_keeps_scorings_guards(tmp_path):
    from validate.scoring.inputs import MAX_IMAGE_PIXELS, CaseError, Preprocessing
    from validate.thumbnails import thumbnail_png

    spec = Preprocessing(kind="array", channels=1, scale=255.0)
    root = tmp_path / "root"
    root.mkdir()
    # an array whose header declares more pixels than the limit: refused from the header, unread
    side = int(np.sqrt(MAX_IMAGE_PIXELS)) * 2
    with open(root / "bomb.npy", "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (side, side)})
    with pytest.raises(CaseError, match="pixel limit"):
        thumbnail_png(root / "bomb.npy", spec, roots=[root])
    # a link inside the root to a file outside it: refused
    np.save(tmp_path / "outside.npy", np.zeros((4, 4), np.uint8))
    (root / "link.npy").symlink_to(tmp_path / "outside.npy")
    with pytest.raises(CaseError, match="outside its image root"):
        thumbnail_png(root / "link.npy", spec, roots=[root])
    np.save(root / "inside.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert (
        _pixels(thumbnail_png(root / "inside.npy", spec, roots=[root])).tolist() == np.arange(16).reshape(4, 4).tolist()
    )
