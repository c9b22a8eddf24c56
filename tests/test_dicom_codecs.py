"""Compressed DICOM transfer syntaxes and the frame policy for multi-frame 2D DICOM.

The fixtures (tests/fixtures/dicom_codecs, built by its make_fixtures.py with dcmtk and pydicom's
encoders) hold numpy-made source images and their encodings in every syntax in clinical use. The
references are the source pixels themselves (lossless: equal; JPEG-LS near-lossless: within NEAR;
lossy: a stated PSNR) and, for lossy codestreams, decoders independent of the suite's path (Pillow on
the bare codestream, GDCM's own reader for 12-bit JPEG).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from validate.scoring import inputs
from validate.scoring.inputs import CaseError, Preprocessing, normalise, read_case_with_stats, read_dicom

FIXTURES = Path(__file__).parent / "fixtures" / "dicom_codecs"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import CASES, JLS_NEAR, source_pixels  # noqa: E402

LOSSLESS = [c for c, (_, uid, _) in CASES.items() if uid.endswith((".57", ".70", ".80", ".90", "1.2.5"))]
NEAR_LOSSLESS = [c for c, (_, uid, _) in CASES.items() if uid.endswith(".81")]
LOSSY = [c for c, (_, uid, _) in CASES.items() if uid.endswith((".50", ".51", ".91"))]
# Stated tolerances of the lossy encodings (PSNR against the source, peak = 2^bits - 1): JPEG at IJG
# quality 90 (grey >= 35 dB; colour with 4:2:2 chroma subsampling >= 28 dB); JPEG 2000 at a 60 dB layer
# (>= 50 dB: the 8-bit images reach ~54.5 dB, the 12-bit ones ~60 dB).
MIN_PSNR = {".50": 35.0, ".51": 35.0, ".91": 50.0}
MIN_PSNR_COLOUR_JPEG = 28.0


def _source(case: str) -> np.ndarray:
    src = np.load(FIXTURES / f"{CASES[case][0]}.npy").astype(np.float32)
    return src if src.ndim == 3 else src[:, :, None]


def _channels(case: str) -> int:
    return 3 if CASES[case][0] == "rgb" else 1


def _psnr(got: np.ndarray, ref: np.ndarray, peak: float) -> float:
    mse = float(np.mean((got.astype(np.float64) - ref) ** 2))
    return float("inf") if mse == 0 else 20 * np.log10(peak / np.sqrt(mse))


def test_fixtures_are_in_the_syntaxes_they_name_and_the_sources_are_reproducible():
    for case, (_, uid, _) in CASES.items():
        ds = pydicom.dcmread(FIXTURES / f"{case}.dcm", stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == uid, case
    for name in ("grey12", "grey8", "rgb"):
        assert np.array_equal(np.load(FIXTURES / f"{name}.npy"), source_pixels(name))
    # every syntax the issue names is covered, 12-bit and 8-bit grey
    uids = {uid for _, uid, _ in CASES.values()}
    assert {f"1.2.840.10008.1.2.4.{s}" for s in (50, 51, 57, 70, 80, 81, 90, 91)} | {"1.2.840.10008.1.2.5"} == uids


@pytest.mark.parametrize("case", LOSSLESS)
def test_lossless_syntax_decodes_to_the_source_exactly(case):
    got = read_dicom(FIXTURES / f"{case}.dcm", _channels(case))
    assert got.dtype == np.float32
    assert np.array_equal(got, _source(case))


@pytest.mark.parametrize("case", NEAR_LOSSLESS)
def test_near_lossless_jpeg_ls_is_within_near(case):
    err = np.abs(read_dicom(FIXTURES / f"{case}.dcm", 1) - _source(case))
    assert err.max() <= JLS_NEAR
    assert err.max() > 0  # it is lossy: the bound is what is being tested


@pytest.mark.parametrize("case", LOSSY)
def test_lossy_syntax_is_within_its_stated_tolerance(case):
    got = read_dicom(FIXTURES / f"{case}.dcm", _channels(case))
    peak = 4095.0 if CASES[case][0] == "grey12" else 255.0
    suffix = "." + CASES[case][1].rsplit(".", 1)[1]
    floor = MIN_PSNR_COLOUR_JPEG if case == "rgb_jpeg_baseline" else MIN_PSNR[suffix]
    assert got.shape == _source(case).shape
    assert floor <= _psnr(got, _source(case), peak) < 200


@pytest.mark.parametrize("case", [c for c in LOSSY if CASES[c][0] != "grey12"])
def test_lossy_8_bit_decodes_as_pillow_decodes_the_bare_codestream(case):
    from PIL import Image
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(FIXTURES / f"{case}.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    with Image.open(io.BytesIO(frame)) as im:
        ref = np.asarray(im.convert("RGB" if _channels(case) == 3 else "L"), dtype=np.float32)
    got = read_dicom(FIXTURES / f"{case}.dcm", _channels(case))
    diff = np.abs(got - ref.reshape(got.shape))
    if case == "rgb_jpeg_baseline":
        # 4:2:2 chroma is upsampled by each library's own filter (libjpeg 9 here, libjpeg-turbo in
        # Pillow): observed max 6 levels, mean 0.34
        assert diff.max() <= 8.0 and diff.mean() <= 1.0
    else:
        assert diff.max() <= 1.0


def test_twelve_bit_jpeg_extended_decodes_as_gdcm_reads_it():
    gdcm = pytest.importorskip("gdcm")
    path = FIXTURES / "grey12_jpeg_extended.dcm"
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read()
    buf = reader.GetImage().GetBuffer()
    raw = buf.encode("utf-8", "surrogateescape") if isinstance(buf, str) else bytes(buf)
    ref = np.frombuffer(raw, dtype="<u2")[: 64 * 64].reshape(64, 64).astype(np.float32)
    got = read_dicom(path, 1)[:, :, 0]
    assert np.abs(got - ref).max() <= 1.0
    assert np.abs(got - _source("grey12_jpeg_extended")[:, :, 0]).max() > 0  # lossy, not a copy


@pytest.mark.parametrize("case", LOSSLESS)
def test_lossless_case_scores_like_the_uncompressed_file(case):
    """Through the scoring reader (resize, statistics, equipment) and a model: the compressed case's
    input, statistics and logit equal the uncompressed source file's."""
    channels = _channels(case)
    scale = 4095.0 if CASES[case][0] == "grey12" else 255.0
    spec = Preprocessing(kind="dicom", size=(32, 32), channels=channels, scale=scale, mean=(0.5,), std=(0.25,))
    x, stats, equipment = read_case_with_stats(FIXTURES / f"{case}.dcm", spec)
    x0, stats0, equipment0 = read_case_with_stats(FIXTURES / f"{CASES[case][0]}.dcm", spec)
    assert np.array_equal(x, x0)
    assert np.array_equal(stats, stats0)
    assert equipment == equipment0 == ("validate fixtures", "codec test")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(channels, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    with torch.no_grad():
        logits = [model(normalise(torch.from_numpy(a[None].copy()), spec)).item() for a in (x, x0)]
    assert logits[0] == logits[1]


# ---- failure reasons -----------------------------------------------------------------------------


def test_missing_decoder_names_the_syntax_and_the_package(monkeypatch):
    from pydicom.pixels import get_decoder

    decoder = get_decoder("1.2.840.10008.1.2.4.80")
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(CaseError) as err:
        read_dicom(FIXTURES / "grey12_jpegls_lossless.dcm", 1)
    assert "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)" in err.value.reason
    assert "no decoder installed" in err.value.reason and "pyjpegls" in err.value.reason
    assert "corrupt" not in err.value.reason


def test_twelve_bit_jpeg_without_libjpeg_says_what_decodes_it(monkeypatch):
    from pydicom.pixels import get_decoder

    decoder = get_decoder("1.2.840.10008.1.2.4.51")
    monkeypatch.setattr(decoder, "_available", {k: v for k, v in decoder._available.items() if k != "pylibjpeg"})
    if not decoder._available:
        pytest.skip("no other JPEG plugin installed to refuse the 12-bit samples")
    with pytest.raises(CaseError) as err:
        read_dicom(FIXTURES / "grey12_jpeg_extended.dcm", 1)
    reason = err.value.reason
    assert "JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51)" in reason
    assert "pylibjpeg-libjpeg" in reason and "corrupt" not in reason


def _broken_codestream(tmp_path: Path, case: str, end: bytes = b"") -> Path:
    """The fixture with its header intact and its codestream cut to a third (then ``end`` appended)."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(FIXTURES / f"{case}.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    cut = frame[: len(frame) // 3] + end
    ds.PixelData = encapsulate([cut + b"\x00" * (len(cut) % 2)])
    path = tmp_path / f"{case}.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    "case, name",
    [
        (
            "grey12_jpeg_lossless_sv1",
            "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        ),
        ("grey12_jpegls_lossless", "JPEG-LS Lossless Image Compression"),
        ("grey12_j2k_lossless", "JPEG 2000 Image Compression (Lossless Only)"),
        ("grey12_jpeg_extended", "JPEG Extended (Process 2 and 4)"),
    ],
)
def test_broken_codestream_is_corrupt_and_names_the_syntax(tmp_path, case, name):
    with pytest.raises(CaseError) as err:
        read_dicom(_broken_codestream(tmp_path, case), 1)
    reason = err.value.reason
    assert reason.startswith("corrupt or truncated DICOM pixel data (")
    assert f"{name} ({CASES[case][1]})" in reason
    assert "\n" not in reason and str(tmp_path) not in reason


@pytest.mark.parametrize(
    "case, end, name",
    [
        # libjpeg fills a cut JPEG codestream silently: without the end-of-image check these decode
        ("grey12_jpeg_lossless", b"", "JPEG Lossless, Non-Hierarchical (Process 14)"),
        ("grey8_jpegls_near", b"", "JPEG-LS Lossy (Near-Lossless) Image Compression"),
        # an end marker after a cut: the decoders themselves refuse it
        ("grey12_j2k_lossless", b"\xff\xd9", "JPEG 2000 Image Compression (Lossless Only)"),
        ("grey12_rle", b"", "RLE Lossless"),
    ],
)
def test_cut_codestreams_are_failures_not_other_images(tmp_path, case, end, name):
    with pytest.raises(CaseError) as err:
        read_dicom(_broken_codestream(tmp_path, case, end), 1)
    assert err.value.reason.startswith(f"corrupt or truncated DICOM pixel data ({name} ({CASES[case][1]})): ")


def test_video_syntax_has_no_python_decoder(tmp_path):
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(FIXTURES / "grey8.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile / Main Level
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3 not really mpeg"])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "video.dcm"
    ds.save_as(path)
    with pytest.raises(
        CaseError, match=r"MPEG2 Main Profile / Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\) has no pixel-data decoder"
    ):
        read_dicom(path, 1)


# ---- multi-frame 2D: input.frames ----------------------------------------------------------------


def _multiframe(
    path: Path, frames: np.ndarray, *, syntax: str | None = None, photometric: str = "MONOCHROME2", **tags
) -> Path:
    """An uncompressed multi-frame DICOM of ``frames`` [F, H, W] (uint16) or [F, H, W, 3] (uint8),
    compressed into ``syntax`` by pydicom's encoders when given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1:3]
    colour = frames.ndim == 4
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8 if colour else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    if syntax is not None:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


FRAMES = np.random.default_rng(18).integers(0, 4000, (5, 40, 41)).astype(np.uint16)  # J2K needs >= 32 a side
SIDE = FRAMES.shape[1:]


def _frames_spec(policy: str, window=None) -> Preprocessing:
    return Preprocessing(kind="dicom", size=SIDE, channels=1, scale=65535.0, window=window, frames=policy)


def test_multiframe_is_refused_by_default_with_the_option_named(tmp_path):
    path = _multiframe(tmp_path / "mf.dcm", FRAMES)
    with pytest.raises(CaseError) as err:
        read_case_with_stats(path, Preprocessing(kind="dicom", size=SIDE, channels=1, scale=65535.0))
    assert "multi-frame DICOM (5 frames)" in err.value.reason
    assert "input.frames" in err.value.reason and "first, middle or max" in err.value.reason


@pytest.mark.parametrize("syntax", [None, "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"])
def test_frame_policies_pick_the_frame_or_the_maximum_after_rescale(tmp_path, syntax):
    # a negative slope: the maximum after rescale is the rescaled minimum of the stored values, so a
    # maximum taken before the rescale would be caught
    path = _multiframe(tmp_path / "mf.dcm", FRAMES, syntax=syntax, RescaleSlope=-0.5, RescaleIntercept=3000.0)
    physical = FRAMES.astype(np.float64) * -0.5 + 3000.0
    expected = {"first": physical[0], "middle": physical[2], "max": physical.max(axis=0)}
    for policy, want in expected.items():
        x, stats, _ = read_case_with_stats(path, _frames_spec(policy))
        assert np.array_equal(x[0], want.astype(np.float32)), policy
        assert (stats[0], stats[1]) == SIDE
    # an even count: middle is frame N // 2 (the later of the two middle frames)
    even = _multiframe(tmp_path / "even.dcm", FRAMES[:4], syntax=syntax)
    assert np.array_equal(read_case_with_stats(even, _frames_spec("middle"))[0][0], FRAMES[2].astype(np.float32))


def test_frame_maximum_is_windowed_after_the_projection(tmp_path):
    path = _multiframe(tmp_path / "mf.dcm", FRAMES, RescaleSlope=1.0, RescaleIntercept=-1024.0)
    center, width = 1000.0, 2000.0
    mip = FRAMES.astype(np.float64).max(axis=0) - 1024.0
    lo, hi = -1024.0, 65535.0 - 1024.0  # the stored range after rescale, which a window maps onto
    y = ((mip - (center - 0.5)) / (width - 1) + 0.5) * (hi - lo) + lo  # PS3.3 C.11.2.1.2.1, by hand
    want = np.clip(y, lo, hi)
    x = read_case_with_stats(path, _frames_spec("max", window=(center, width)))[0]
    assert np.allclose(x[0], want, atol=1e-2)


def _functional_groups(path: Path, intercepts: list[float], window: tuple[float, float]) -> Path:
    """``path`` rewritten as an enhanced object would carry it: a rescale per frame in the Per-Frame
    Functional Groups (slope 2, intercept per frame) and the window in the Shared Functional Groups."""
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(path)
    per_frame = []
    for intercept in intercepts:
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 2.0, intercept, "US"
        item = Dataset()
        item.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(item)
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = window
    shared = Dataset()
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.save_as(path)
    return path


def test_rescale_and_window_of_an_enhanced_object_come_from_its_functional_groups(tmp_path):
    intercepts = [-1000.0, 0.0, 500.0, -200.0, 100.0]
    center, width = 2000.0, 4000.0
    path = _functional_groups(_multiframe(tmp_path / "enh.dcm", FRAMES), intercepts, (center, width))
    physical = FRAMES.astype(np.float64) * 2.0 + np.asarray(intercepts)[:, None, None]
    # the window maps onto the stored range after the frame's rescale (PS3.3 C.11.2.1.2.1, by hand)

    def windowed(x, intercept):
        lo, hi = intercept, 65535.0 * 2.0 + intercept
        return np.clip(((x - (center - 0.5)) / (width - 1) + 0.5) * (hi - lo) + lo, lo, hi)

    expected = {
        "first": windowed(physical[0], intercepts[0]),
        "middle": windowed(physical[2], intercepts[2]),
        "max": windowed(physical.max(axis=0), intercepts[0]),  # the stack takes the first frame's window
    }
    for policy, want in expected.items():
        x = read_case_with_stats(path, Preprocessing(kind="dicom", size=SIDE, channels=1, scale=1e6, frames=policy))[0]
        assert np.allclose(x[0], want, atol=1e-2), policy


def test_colour_frames_have_no_maximum_but_a_first_frame(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (3, *SIDE, 3)).astype(np.uint8)
    path = _multiframe(tmp_path / "cine.dcm", frames)
    spec = Preprocessing(kind="dicom", size=SIDE, channels=3, scale=255.0, frames="max")
    with pytest.raises(CaseError, match="max takes the per-pixel maximum of grey frames.*RGB.*first or middle"):
        read_case_with_stats(path, spec)
    first = read_case_with_stats(path, Preprocessing(kind="dicom", size=SIDE, channels=3, scale=255.0, frames="first"))
    assert np.array_equal(first[0], frames[0].transpose(2, 0, 1).astype(np.float32))


def test_header_guard_counts_every_frame_before_decoding(tmp_path, monkeypatch):
    path = _multiframe(tmp_path / "mf.dcm", FRAMES, syntax="1.2.840.10008.1.2.5")
    monkeypatch.setattr(inputs, "MAX_IMAGE_PIXELS", 40 * 41 * 5 - 1)  # one frame fits, five do not

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the header guard")

    monkeypatch.setattr("validate.scoring.dicom_pixels.decode_pixels", no_decoding)
    with pytest.raises(CaseError, match=r"40x41 pixels x 5 frame\(s\) = 8200 pixels.*decompression bomb"):
        read_case_with_stats(path, _frames_spec("first"))


def test_frame_policy_reaches_preprocessing_and_the_cache_key():
    from validate.protocol import InputSpec

    spec = Preprocessing.from_protocol(InputSpec(kind="dicom", size=(8, 8), frames="middle"))
    assert spec.frames == "middle" and spec.key()["frames"] == "middle"
    default = Preprocessing.from_protocol(InputSpec(kind="dicom", size=(8, 8)))
    assert default.frames == "refuse" and "frames" not in default.key()
    with pytest.raises(ValueError, match="frames"):
        InputSpec(kind="dicom", size=(8, 8), frames="all")
    # the installed decoders are part of the key: a failure cached for want of one is not reused
    assert ["pydicom", pydicom.__version__] in default.key()["decoders"]
    assert "decoders" not in Preprocessing(kind="tabular", features=("a",)).key()


# ---- end to end ----------------------------------------------------------------------------------


def test_a_site_of_every_8_bit_syntax_and_a_multiframe_scores_end_to_end(tmp_path):
    """``score_protocol`` on a DICOM site holding the uncompressed source, its encoding in each syntax
    and a 3-frame file under ``input.frames: middle``: every case scores; lossless encodings give the
    source's logit exactly, lossy ones a logit near it, the multi-frame its middle frame's."""
    import shutil

    import pandas as pd
    import yaml

    from validate.scoring import score_protocol

    from test_scoring_support import image_input, tiny_model, write_factory, write_protocol

    folder = tmp_path / "data" / "a"
    folder.mkdir(parents=True)
    cases = ["grey8"] + [c for c, (src, _, _) in CASES.items() if src == "grey8"]
    for case in cases:
        shutil.copy(FIXTURES / f"{case}.dcm", folder / f"{case}.dcm")
    grey8 = np.load(FIXTURES / "grey8.npy")
    stack = np.stack([255 - grey8, grey8, grey8 // 2]).astype(np.uint16)  # middle frame = the source
    _multiframe(folder / "cine.dcm", stack)
    cases.append("cine")
    rows = ["case_id,patient_id,label,image,sex"] + [f"{c},p{i},{i % 2},{c}.dcm,F" for i, c in enumerate(cases)]
    (tmp_path / "data" / "a.csv").write_text("\n".join(rows) + "\n")
    write_factory(tmp_path / "code")
    torch.save(tiny_model().state_dict(), tmp_path / "model_state.pt")
    model = {"checkpoint": str(tmp_path / "model_state.pt"), "format": "state_dict"}
    model |= {"factory": "tiny_def:build_model", "factory_path": "code"}
    spec = image_input(16) | {"kind": "dicom", "frames": "middle"}  # scale 255
    sites = [{"id": "a", "manifest": "data/a.csv", "image_root": "data/a", "role": "development"}]
    protocol = write_protocol(tmp_path / "protocol.yaml", sites=sites, input=spec, model=model)
    assert yaml.safe_load(protocol.read_text())["input"]["frames"] == "middle"

    result = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=4, shard_size=8)
    assert result.counts["failed"] == 0 and result.counts["scored"] == len(cases)
    logit = pd.read_parquet(tmp_path / "out" / "predictions.parquet").set_index("case_id")["logit"]
    for case in cases[1:]:
        uid = CASES[case][1] if case in CASES else ""
        if case == "cine" or uid.endswith((".57", ".70", ".80", ".90", "1.2.5")):
            assert logit[case] == logit["grey8"], case
        else:  # lossy: decoded values within a few levels of the source's
            assert abs(logit[case] - logit["grey8"]) < 0.01, case  # observed: below 3e-4
