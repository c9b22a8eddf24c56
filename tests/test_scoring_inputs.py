"""Reading and preprocessing cases, checked against independent computations (Pillow, numpy, the
DICOM standard's window formula written out here), and bad files becoming CaseErrors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from validate.scoring.inputs import CaseError, Preprocessing, feature_matrix, is_dicom, normalise, read_case

from test_scoring_support import dicom_dataset

GREY = Preprocessing(kind="image", size=(8, 8), channels=1, scale=255.0, mean=(0.5,), std=(0.5,))


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_grey_png_raw_values_then_normalise(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    x = read_case(_png(tmp_path / "a.png", arr), GREY)
    assert x.dtype == np.uint8 and x.shape == (1, 8, 8)
    assert np.array_equal(x[0], arr)
    got = normalise(torch.from_numpy(x[None]), GREY).numpy()
    want = (arr.astype(np.float32) / 255.0 - 0.5) / 0.5
    assert np.abs(got[0, 0] - want).max() <= 1e-6


def test_rgb_to_grey_is_pillow_luma_and_grey_to_rgb_repeats(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = _png(tmp_path / "c.png", rgb)
    grey = read_case(path, GREY)
    assert np.array_equal(grey[0], np.asarray(Image.open(path).convert("L")))
    spec3 = Preprocessing(kind="image", size=(8, 8), channels=3, scale=255.0, mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    x3 = read_case(path, spec3)
    assert np.array_equal(x3, rgb.transpose(2, 0, 1))
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    xg = read_case(_png(tmp_path / "g.png", g), spec3)
    assert all(np.array_equal(xg[c], g) for c in range(3))
    got = normalise(torch.from_numpy(x3[None]), spec3).numpy()[0]
    want = (rgb.transpose(2, 0, 1) / 255.0 - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([1, 2, 3])[
        :, None, None
    ]
    assert np.abs(got - want).max() <= 1e-6


def test_sixteen_bit_png_and_jpeg_and_tiff(tmp_path):
    arr16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(arr16).save(tmp_path / "d.png")
    x = read_case(tmp_path / "d.png", GREY)
    assert x.dtype == np.float32 and np.array_equal(x[0], arr16.astype(np.float32))
    arr = np.full((8, 8), 77, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "e.jpg", quality=100)
    Image.fromarray(arr).save(tmp_path / "f.tif")
    assert np.abs(read_case(tmp_path / "e.jpg", GREY)[0].astype(int) - 77).max() <= 1
    assert np.array_equal(read_case(tmp_path / "f.tif", GREY)[0], arr)


def test_resize_matches_pillow_antialiased_bilinear(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (40, 30), dtype=np.uint8)
    spec = Preprocessing(kind="image", size=(10, 12), channels=1, scale=255.0)
    x = read_case(_png(tmp_path / "r.png", arr), spec)
    assert x.shape == (1, 10, 12) and x.dtype == np.float32
    # Pillow's bilinear filter on a float image (support widened when shrinking) is the reference
    want = np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((12, 10), Image.BILINEAR))
    assert np.abs(x[0] - want).max() < 0.05


def test_not_an_image_corrupt_and_truncated_are_case_errors(tmp_path):
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    with pytest.raises(CaseError, match="not an image"):
        read_case(tmp_path / "text.png", GREY)
    good = _png(tmp_path / "good.png", np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseError, match="corrupt or truncated"):
        read_case(tmp_path / "trunc.png", GREY)
    with pytest.raises(CaseError, match="not found"):
        read_case(tmp_path / "missing.png", GREY)


def _png_header_only(path, width, height):
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_refused(tmp_path):
    with pytest.raises(CaseError, match="decompression bomb"):
        read_case(_png_header_only(tmp_path / "bomb.png", 30000, 30000), GREY)  # 2x above Pillow's limit
    with pytest.raises(CaseError, match="decompression bomb"):
        read_case(_png_header_only(tmp_path / "bomb2.png", 10000, 9000), GREY)  # between 1x and 2x


# ---- DICOM ---------------------------------------------------------------------------------------


def _dicom(
    path,
    pixels,
    *,
    photometric="MONOCHROME2",
    bits=8,
    signed=False,
    slope=None,
    intercept=None,
    center=None,
    width=None,
    frames=None,
    syntax=ExplicitVRLittleEndian,
    pixel_bytes=None,
):
    ds = dicom_dataset(*pixels.shape[-2:], syntax=syntax)
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    if frames:
        ds.NumberOfFrames = frames
    ds.PixelData = pixel_bytes if pixel_bytes is not None else pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _window(x, c, w, ymin, ymax):
    """DICOM PS3.3 C.11.2.1.2.1, the LINEAR window function, written out independently."""
    x = np.asarray(x, dtype=np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin
    y = np.where(x <= c - 0.5 - (w - 1) / 2, ymin, y)
    return np.where(x > c - 0.5 + (w - 1) / 2, ymax, y)


def _dspec(window=None):
    return Preprocessing(kind="dicom", size=(8, 8), channels=1, scale=255.0, window=window)


def test_dicom_raw_rescale_window_and_monochrome1(tmp_path):
    px = np.random.default_rng(4).integers(0, 256, (8, 8), dtype=np.uint8)
    plain = read_case(_dicom(tmp_path / "a.dcm", px), _dspec())
    assert np.array_equal(plain[0], px.astype(np.float32))
    # rescale slope/intercept (modality LUT), no window: rescaled values
    res = read_case(_dicom(tmp_path / "b.dcm", px, slope=2.0, intercept=-10.0), _dspec())
    assert np.allclose(res[0], px * 2.0 - 10.0)
    # the file's own window, onto the stored range 0..255
    win = read_case(_dicom(tmp_path / "c.dcm", px, center=100, width=80), _dspec())
    assert np.allclose(win[0], _window(px, 100, 80, 0, 255), atol=1e-4)
    # the protocol's window overrides the file's
    over = read_case(tmp_path / "c.dcm", _dspec(window=(128.0, 200.0)))
    assert np.allclose(over[0], _window(px, 128, 200, 0, 255), atol=1e-4)
    # MONOCHROME1: inverted so that bright means dense
    inv = read_case(_dicom(tmp_path / "d.dcm", px, photometric="MONOCHROME1"), _dspec())
    assert np.allclose(inv[0], 255.0 - px)


def test_dicom_sixteen_bit_signed_with_rescale_and_window(tmp_path):
    px = np.random.default_rng(5).integers(-1000, 3000, (8, 8)).astype(np.int16)
    path = _dicom(tmp_path / "ct.dcm", px, bits=16, signed=True, slope=1.0, intercept=-1024.0, center=40, width=400)
    got = read_case(path, _dspec())
    hu = px.astype(np.float64) - 1024.0
    lo, hi = -(2**15) - 1024.0, 2**15 - 1 - 1024.0  # stored range after rescale
    assert np.allclose(got[0], _window(hu, 40, 400, lo, hi), atol=1e-2)


def test_dicom_by_preamble_without_extension(tmp_path):
    px = np.zeros((8, 8), dtype=np.uint8)
    path = _dicom(tmp_path / "noext", px)
    assert is_dicom(path)
    x = read_case(path, Preprocessing(kind="image", size=(8, 8), channels=1, scale=255.0))
    assert x.shape == (1, 8, 8)


def test_dicom_refusals(tmp_path):
    px = np.zeros((2, 8, 8), dtype=np.uint8)
    with pytest.raises(CaseError, match="multi-frame"):
        read_case(_dicom(tmp_path / "mf.dcm", px, frames=2), _dspec())
    jls = _dicom(
        tmp_path / "jls.dcm",
        px[0],
        syntax=JPEGLSLossless,
        pixel_bytes=pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7 not really jpeg-ls \xff\xd9"]),
    )
    # an intact header over a broken JPEG-LS codestream: corrupt, with the syntax named (a missing
    # decoder is tests/test_dicom_codecs.py's)
    with pytest.raises(CaseError, match=r"corrupt or truncated .*JPEG-LS Lossless .*1\.2\.840\.10008\.1\.2\.4\.80"):
        read_case(jls, _dspec())
    good = _dicom(tmp_path / "good.dcm", np.full((8, 8), 9, dtype=np.uint8)).read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(good[:-20])
    with pytest.raises(CaseError, match="truncated|corrupt"):
        read_case(tmp_path / "trunc.dcm", _dspec())
    (tmp_path / "fake.dcm").write_text("not dicom at all")
    with pytest.raises(CaseError):
        read_case(tmp_path / "fake.dcm", _dspec())


# ---- arrays and tables ---------------------------------------------------------------------------


def test_npy_layouts_and_pickles(tmp_path):
    spec = Preprocessing(kind="array", size=(4, 5), channels=1, scale=1.0)
    hw = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.save(tmp_path / "hw.npy", hw)
    np.save(tmp_path / "chw.npy", hw[None])
    np.save(tmp_path / "hwc.npy", hw[:, :, None])
    for name in ("hw", "chw", "hwc"):
        assert np.array_equal(read_case(tmp_path / f"{name}.npy", spec)[0], hw)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CaseError, match="pickled objects are refused"):
        read_case(tmp_path / "obj.npy", spec)
    np.save(tmp_path / "bad.npy", np.zeros((2, 4, 5, 6)))
    with pytest.raises(CaseError, match="shape"):
        read_case(tmp_path / "bad.npy", spec)


def test_feature_matrix_missing_is_nan_and_text_is_a_failure():
    import pandas as pd

    df = pd.DataFrame({"a": ["1", "", "3"], "b": ["2.5", "x", None]})
    x, bad = feature_matrix(df, ["a", "b"])
    assert x.dtype == np.float32 and x.shape == (3, 2)
    assert x[0].tolist() == [1.0, 2.5] and np.isnan(x[1, 0]) and np.isnan(x[2, 1])
    assert list(bad) == [1] and "'x'" in bad[1]


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_dicom_voi_functions_agree_with_pydicom(tmp_path, function):
    # 12 bits stored in 16 (pydicom decodes these) and 8-bit (read from the bytes here): both against
    # pydicom's own modality LUT and windowing, an implementation independent of ours
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    for bits, px in (
        (12, np.random.default_rng(6).integers(0, 4096, (8, 8)).astype(np.uint16)),
        (8, np.random.default_rng(7).integers(0, 256, (8, 8)).astype(np.uint8)),
    ):
        path = _dicom(
            tmp_path / f"{function}{bits}.dcm",
            px,
            bits=bits,
            slope=0.5,
            intercept=10.0,
            center=float(px.mean()),
            width=float(px.std() * 3),
        )
        ds = pydicom.dcmread(path)
        ds.VOILUTFunction = function
        ds.save_as(path)
        ds = pydicom.dcmread(path)
        want = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0, prefer_lut=False)
        got = read_case(path, _dspec())[0]
        assert np.allclose(got, want, atol=1e-3), (function, bits)


def test_an_extension_that_lies_is_still_read(tmp_path):
    arr = np.full((8, 8), 200, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "really_a_tiff.png", format="TIFF")
    assert np.array_equal(read_case(tmp_path / "really_a_tiff.png", GREY)[0], arr)


# ---- failure reasons never carry paths -------------------------------------------------------------


def test_failure_reasons_name_the_fault_not_the_file(tmp_path):
    from validate.scoring.inputs import scrub_paths

    patient = tmp_path / "DOE_JOHN_19700101"
    patient.mkdir()
    (patient / "scan.png").mkdir()  # a folder where the image should be: IsADirectoryError quotes its path
    np.save(patient / "cut.npy", np.zeros((4, 4)))
    (patient / "cut.npy").write_bytes((patient / "cut.npy").read_bytes()[:100])
    for name, spec in (("scan.png", GREY), ("cut.npy", Preprocessing(kind="array", size=(4, 4)))):
        with pytest.raises(CaseError) as err:
            read_case(patient / name, spec)
        assert "DOE_JOHN" not in err.value.reason and str(tmp_path) not in err.value.reason, err.value.reason
    assert "Is a directory" in CaseError(f"x: [Errno 21] Is a directory: '{patient}/scan.png'").reason
    assert scrub_paths(f"failed on {patient}/a.dcm or C:\\Users\\DOE\\a.dcm") == "failed on <path> or <path>"
    assert scrub_paths("16/3 and a/b stay") == "16/3 and a/b stay"  # ratios and relative fragments are not paths
    assert scrub_paths("cannot open scan.dcm here", "scan.dcm") == "cannot open <path> here"


# ---- values outside the protocol's scale -----------------------------------------------------------


def test_values_beyond_the_scale_are_refused_when_scoring(tmp_path):
    """Regression: a 16-bit PNG under `scale: 255` was normalised to ~513 and scored (logit 4360)."""
    from validate.scoring.inputs import read_case_with_stats

    arr16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040  # up to 65520
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    with pytest.raises(CaseError, match="pixel values up to 65520 exceed input.scale 255") as err:
        read_case_with_stats(tmp_path / "deep.png", GREY)
    assert err.value.stage == "preprocess"
    # the same file under the scale of its bit depth is read, and plain read_case (thumbnails) still reads it
    deep = Preprocessing(kind="image", size=(8, 8), channels=1, scale=65535.0)
    assert np.array_equal(read_case_with_stats(tmp_path / "deep.png", deep)[0][0], arr16.astype(np.float32))
    assert np.array_equal(read_case(tmp_path / "deep.png", GREY)[0], arr16.astype(np.float32))
    # 1% beyond the scale is tolerated, 2% is not (the rule: max |value| <= 1.01 * scale)
    Image.fromarray(np.full((8, 8), 257, dtype=np.uint16)).save(tmp_path / "near.png")
    Image.fromarray(np.full((8, 8), 261, dtype=np.uint16)).save(tmp_path / "over.png")
    assert read_case_with_stats(tmp_path / "near.png", GREY)[0].max() == 257
    with pytest.raises(CaseError, match="261 exceed"):
        read_case_with_stats(tmp_path / "over.png", GREY)
    # 12-bit DICOM: its window output spans 0..4095, so scale 4095 fits and 255 does not
    px = np.random.default_rng(9).integers(0, 4096, (8, 8)).astype(np.uint16)
    px[0, 0] = 4095
    path = _dicom(tmp_path / "d12.dcm", px, bits=12)
    with pytest.raises(CaseError, match="exceed input.scale 255"):
        read_case_with_stats(path, _dspec())
    got = read_case_with_stats(path, Preprocessing(kind="dicom", size=(8, 8), channels=1, scale=4095.0))[0]
    assert np.array_equal(got[0], pydicom.dcmread(path).pixel_array.astype(np.float32))
    # integer arrays are checked like images; float arrays keep the range their producer gave them
    np.save(tmp_path / "u16.npy", arr16)
    np.save(tmp_path / "z.npy", np.linspace(-4, 4, 64, dtype=np.float32).reshape(8, 8))
    spec = Preprocessing(kind="array", size=(8, 8), channels=1, scale=255.0)
    with pytest.raises(CaseError, match="exceed input.scale 255"):
        read_case_with_stats(tmp_path / "u16.npy", spec)
    assert read_case_with_stats(tmp_path / "z.npy", spec)[0].min() == -4.0


def test_signed_dicom_within_its_scale_is_scored(tmp_path):
    from validate.scoring.inputs import read_case_with_stats

    px = np.random.default_rng(5).integers(-1000, 3000, (8, 8)).astype(np.int16)
    path = _dicom(tmp_path / "ct.dcm", px, bits=16, signed=True, slope=1.0, intercept=-1024.0, center=40, width=400)
    spec = Preprocessing(kind="dicom", size=(8, 8), channels=1, scale=65535.0)  # the window's output span
    assert read_case_with_stats(path, spec)[0].min() < 0  # negative values fit |value| <= scale


# ---- PALETTE COLOR -------------------------------------------------------------------------------


def _palette_dicom(path, indices, luts, bits):
    """A PALETTE COLOR DICOM: 8-bit stored indices, Red/Green/Blue LUTs of ``bits``-bit entries."""
    ds = dicom_dataset(*indices.shape)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    for colour, lut in zip(("Red", "Green", "Blue"), luts, strict=True):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [len(lut), 0, bits])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.asarray(lut, dtype=dtype).tobytes())
    ds.PixelData = indices.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("bits", [8, 16])
def test_palette_colour_dicom_is_read_through_its_palette(tmp_path, bits):
    """Regression: PALETTE COLOR DICOMs were read as grey indices, up to the whole range off the display."""
    from pydicom.pixels import apply_color_lut

    from validate.scoring.inputs import read_case_with_stats

    rng = np.random.default_rng(12)
    indices = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    top = 255 if bits == 8 else 65535
    luts = [rng.integers(0, top + 1, 256) for _ in range(3)]
    path = _palette_dicom(tmp_path / f"pal{bits}.dcm", indices, luts, bits)
    want = np.stack([lut[indices] for lut in luts], axis=-1).astype(np.float64)  # the lookup by hand
    ds = pydicom.dcmread(path)
    assert np.array_equal(apply_color_lut(ds.pixel_array, ds), want)  # and by pydicom
    spec3 = Preprocessing(kind="dicom", size=(8, 8), channels=3, scale=float(top))
    got, stats, _ = read_case_with_stats(path, spec3)
    assert np.array_equal(got, want.transpose(2, 0, 1))
    # one channel: the luma of the displayed colours, as for any colour image
    spec1 = Preprocessing(kind="dicom", size=(8, 8), channels=1, scale=float(top))
    grey = read_case_with_stats(path, spec1)[0][0]
    assert np.allclose(grey, want @ np.array([0.299, 0.587, 0.114]), rtol=1e-6, atol=1e-6 * top)
    if bits == 16:  # 16-bit entries under scale 255: refused, never scored
        with pytest.raises(CaseError, match="exceed input.scale 255"):
            read_case_with_stats(path, Preprocessing(kind="dicom", size=(8, 8), channels=3, scale=255.0))


def test_a_palette_that_cannot_be_applied_is_a_case_error(tmp_path):
    path = _palette_dicom(tmp_path / "p.dcm", np.zeros((8, 8), np.uint8), [np.zeros(256)] * 3, 8)
    ds = pydicom.dcmread(path)
    del ds.RedPaletteColorLookupTableDescriptor
    ds.save_as(path)
    with pytest.raises(CaseError, match="PALETTE COLOR") as err:
        read_case(path, Preprocessing(kind="dicom", size=(8, 8), channels=3, scale=255.0))
    assert err.value.stage == "preprocess"


# ---- DICOM decompression bombs ---------------------------------------------------------------------


def _deflated(path, rows, cols, pixel_bytes):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dicom_dataset(rows, cols, syntax=DeflatedExplicitVRLittleEndian)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixel_bytes
    ds.save_as(path, enforce_file_format=True)
    return path


_PEAK_RSS = """
import resource, sys
from pathlib import Path
from validate.scoring.inputs import CaseError, Preprocessing, read_case_with_stats
spec = Preprocessing(kind="dicom", size=(8, 8), channels=1, scale=255.0)
read_case_with_stats(Path(sys.argv[1]), spec)  # warm up: imports, pydicom's dictionaries
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_case_with_stats(Path(sys.argv[2]), spec)
    print("read", end=" ")
except CaseError as exc:
    print("refused:", exc.reason, end=" ")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_deflated_dicom_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path):
    """Regression: a ~100 KB deflated DICOM declaring 10000x10000 pixels took gigabytes to refuse."""
    import subprocess
    import sys
    from pathlib import Path

    small = _deflated(tmp_path / "small.dcm", 8, 8, bytes(range(64)))
    bomb = _deflated(tmp_path / "bomb.dcm", 10000, 10000, bytes(10000 * 10000))
    assert bomb.stat().st_size < 200_000  # 100 MB of pixels in a small file
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(small), str(bomb)], capture_output=True, text=True, cwd=repo, timeout=300
    )
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    grown_kib = int(words[-1])
    assert words[0] == "refused:" and "decompression bomb guard" in out.stdout, out.stdout
    assert "10000x10000" in out.stdout
    assert grown_kib < 30 * 1024, f"peak RSS grew by {grown_kib} KiB reading a 100 MB bomb"  # decoded: 97,656 KiB


def test_a_deflated_dicom_reads_as_pydicom_reads_it_and_lying_headers_are_refused(tmp_path):
    px = np.random.default_rng(13).integers(0, 256, (8, 8), dtype=np.uint8)
    path = _deflated(tmp_path / "ok.dcm", 8, 8, px.tobytes())
    assert np.array_equal(read_case(path, _dspec())[0], pydicom.dcmread(path).pixel_array.astype(np.float32))
    # a small header with far more pixel data than it declares: refused before it is all inflated
    liar = _deflated(tmp_path / "liar.dcm", 8, 8, bytes(40 * 2**20))
    with pytest.raises(CaseError, match="inflates beyond"):
        read_case(liar, _dspec())
    # a cut deflate stream is a truncated file, not a crash
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-30])
    with pytest.raises(CaseError, match="truncated"):
        read_case(tmp_path / "cut.dcm", _dspec())


def test_an_uncompressed_dicom_declaring_too_many_pixels_is_refused_from_its_header(tmp_path):
    path = _dicom(tmp_path / "big.dcm", np.zeros((8, 8), np.uint8))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 10000, 10000
    ds.save_as(path)
    with pytest.raises(CaseError, match="10000x10000 pixels.*decompression bomb guard"):
        read_case(path, _dspec())
