"""Volume readers and preprocessing (validate.scoring.volumes): NIfTI, DICOM series, enhanced and
legacy multi-frame DICOM of one known volume give the same model input; a broken series is a
CaseError with its reason; resampling, windowing and crop/pad against independent references."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from validate.scoring import volumes
from validate.scoring.inputs import CaseError
from validate.scoring.volumes import VolumeSpec, prepare_volume, read_volume, read_volume_case

from tests.volume_fixtures import (
    DEFAULT_EQUIPMENT,
    axial_affine,
    known_volume,
    write_dicom_series,
    write_enhanced_multiframe,
    write_legacy_multiframe,
    write_nifti,
)

SPACING = (2.5, 0.8, 0.7)  # (slices, rows, columns) of the known axial volume, mm


@pytest.fixture(scope="module")
def known():
    return known_volume(), axial_affine(SPACING)


@pytest.fixture(scope="module")
def files(tmp_path_factory, known):
    """The known volume in every format this module reads."""
    voxels, affine = known
    root = tmp_path_factory.mktemp("volumes")
    return {
        "nifti": write_nifti(root / "vol.nii.gz", voxels, affine),
        "nifti_transposed": write_nifti(root / "vol_t.nii", voxels, affine, axes=(2, 0, 1)),
        "series": write_dicom_series(
            root / "series", voxels, affine, intercepts=[-1024.0 + 7 * (k % 3) for k in range(16)]
        ),
        "enhanced": write_enhanced_multiframe(root / "enhanced.dcm", voxels, affine),
        "legacy": write_legacy_multiframe(root / "legacy.dcm", voxels, affine),
    }


def ras_reference(voxels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The known volume in RAS axis order by nibabel's own canonical reorientation (the reference)."""
    img = nib.as_closest_canonical(nib.Nifti1Image(voxels, affine))
    return np.asarray(img.dataobj, dtype=np.float32)


# ---- readers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["nifti", "nifti_transposed", "series", "enhanced", "legacy"])
def test_every_format_reads_the_known_volume_in_physical_units(files, known, fmt):
    voxels, affine = known
    vol = read_volume(files[fmt])
    assert vol.voxels.dtype == np.float32 and vol.voxels.ndim == 3
    ras, _ = volumes.reorient(vol.voxels, vol.affine, "RAS")
    np.testing.assert_array_equal(ras, ras_reference(voxels, affine))
    # the world position of the first voxel of the RAS array is the same in every format
    corner = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(voxels, affine)).affine)[:3, 3]
    canon = nib.as_closest_canonical(nib.Nifti1Image(vol.voxels, vol.affine)).affine
    np.testing.assert_allclose(canon[:3, 3], corner, atol=1e-6)
    assert sorted(vol.spacing) == pytest.approx(sorted(SPACING))


@pytest.mark.parametrize("fmt", ["series", "enhanced", "legacy"])
def test_dicom_acquisition_attributes(files, fmt):
    acq = read_volume(files[fmt]).acquisition
    assert acq["manufacturer"] == DEFAULT_EQUIPMENT["Manufacturer"]
    assert acq["manufacturer_model"] == DEFAULT_EQUIPMENT["ManufacturerModelName"]
    assert acq["convolution_kernel"] == "STANDARD"
    assert acq["slice_thickness_mm"] == pytest.approx(2.5)
    assert acq["kvp"] == pytest.approx(120.0)
    # axial stack: the slice step is z (S-I), rows y (A-P), columns x (R-L)
    assert (acq["spacing_z_mm"], acq["spacing_y_mm"], acq["spacing_x_mm"]) == pytest.approx(SPACING)


def test_nifti_acquisition_holds_spacing_only(files):
    acq = read_volume(files["nifti_transposed"]).acquisition
    assert acq == pytest.approx({"spacing_z_mm": 2.5, "spacing_y_mm": 0.8, "spacing_x_mm": 0.7})


def test_compressed_series_reads_like_the_uncompressed_one(tmp_path, known):
    voxels, affine = known
    from pydicom.uid import RLELossless

    folder = write_dicom_series(tmp_path / "rle", voxels, affine, compress=RLELossless)
    np.testing.assert_array_equal(
        read_volume(folder).voxels, read_volume(write_dicom_series(tmp_path / "raw", voxels, affine)).voxels
    )


# ---- the done-when: one volume, every format, the same model input and logit -------------------------

SPEC = VolumeSpec(size=(24, 18, 12), spacing=(1.0, 1.1, 2.0), orientation="RAS", window=(0.0, 1600.0), scale=1.0)


class Tiny3d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 4, 3)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def test_every_format_gives_the_same_model_input_and_logit(files):
    """Tolerance: the grids are identical after reorientation, so inputs agree to float32 rounding of
    the interpolation (1e-5 of the [0, 1] window range); logits to 1e-5."""
    inputs = {fmt: prepare_volume(read_volume(p), SPEC) for fmt, p in files.items()}
    ref = inputs["nifti"]
    assert ref.shape == (1, 24, 18, 12) and ref.dtype == np.float32
    assert 0.0 <= ref.min() and ref.max() <= 1.0 and ref.std() > 0.05
    model = Tiny3d().eval()
    with torch.no_grad():
        logits = {fmt: float(model(torch.from_numpy(x)[None])) for fmt, x in inputs.items()}
    for fmt, x in inputs.items():
        np.testing.assert_allclose(x, ref, atol=1e-5, err_msg=fmt)
        assert logits[fmt] == pytest.approx(logits["nifti"], abs=1e-5)


def test_read_volume_case_returns_input_stats_and_acquisition(files, known):
    voxels, affine = known
    spec = VolumeSpec(size=(8, 8, 8), window=(0.0, 1600.0), scale=1.0, channels=3)
    x, stats, acq = read_volume_case(files["series"], spec)
    assert x.shape == (3, 8, 8, 8)
    np.testing.assert_array_equal(x[0], x[2])
    # statistics of the whole windowed volume (before the 8^3 crop), computed here by hand
    ras = ras_reference(voxels, affine)
    windowed = np.clip((ras + 800.0) / 1600.0, 0.0, 1.0)
    assert stats[2] == pytest.approx(windowed.mean(), rel=1e-6)
    assert stats[3] == pytest.approx(windowed.std(), rel=1e-5)
    assert (stats[0], stats[1]) == (ras.shape[1], ras.shape[2])
    assert acq["kvp"] == 120.0


# ---- DICOM series that are not one volume ----------------------------------------------------------


def test_series_with_a_missing_slice_is_a_failure_with_the_reason(tmp_path, known):
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "gap", voxels, affine, skip=(11,))
    with pytest.raises(CaseError) as err:
        read_volume(folder)
    assert err.value.reason == (
        "DICOM series has a gap of 5 mm between slices 11 and 12 where the step is 2.5 mm: a slice is missing"
    )


def test_duplicate_slice_is_refused(tmp_path, known):
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "dup", voxels, affine)
    first = sorted(folder.iterdir())[0]
    (folder / "copy.dcm").write_bytes(first.read_bytes())
    with pytest.raises(CaseError, match="two slices at the same position"):
        read_volume(folder)


def test_two_series_in_one_folder_are_refused(tmp_path, known):
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "two", voxels, affine)
    write_dicom_series(tmp_path / "other", voxels, affine, series_uid="1.2.3.4")
    (folder / "zz.dcm").write_bytes(next((tmp_path / "other").iterdir()).read_bytes())
    with pytest.raises(CaseError, match="holds 2 series; one series per case is expected"):
        read_volume(folder)


def test_mixed_orientation_and_size_are_refused(tmp_path, known):
    import pydicom

    voxels, affine = known
    folder = write_dicom_series(tmp_path / "tilt", voxels, affine)
    victim = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(victim)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    ds.save_as(victim)
    with pytest.raises(CaseError, match="mixes slice orientations"):
        read_volume(folder)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Columns = 23
    ds.PixelData = np.zeros((20, 23), "<i2").tobytes()
    ds.save_as(victim)
    with pytest.raises(CaseError, match="mixes slice sizes"):
        read_volume(folder)


def test_sheared_series_is_refused(tmp_path, known):
    voxels, affine = known
    sheared = affine.copy()
    sheared[:3, 0] += [0.0, 0.3, 0.0]  # each slice 0.3 mm further along y: a tilted gantry
    with pytest.raises(CaseError, match="is sheared"):
        read_volume(write_dicom_series(tmp_path / "shear", voxels, sheared))


def test_irregular_steps_are_refused(tmp_path, known):
    import pydicom

    voxels, affine = known
    folder = write_dicom_series(tmp_path / "irregular", voxels, affine, shuffle_names=False)
    victim = sorted(folder.iterdir())[5]
    ds = pydicom.dcmread(victim)
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], ds.ImagePositionPatient[2] + 0.8]
    ds.save_as(victim)
    with pytest.raises(CaseError, match="irregular slice steps"):
        read_volume(folder)


def test_symlink_out_of_the_folder_and_non_dicom_files_are_refused(tmp_path, known):
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "link", voxels, affine)
    outside = tmp_path / "secret.dcm"
    outside.write_bytes(next(folder.iterdir()).read_bytes())
    os.symlink(outside, folder / "zz.dcm")
    with pytest.raises(CaseError, match="symbolic link that leads outside"):
        read_volume(folder)
    (folder / "zz.dcm").unlink()
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(CaseError, match="1 file\\(s\\) that are not DICOM"):
        read_volume(folder)
    (folder / "notes.txt").unlink()
    (folder / ".DS_Store").write_bytes(b"\0" * 10)  # hidden files that are not DICOM are skipped
    import pydicom

    index = pydicom.dcmread(next(folder.iterdir()))
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(index, keyword)
    index.save_as(folder / "DICOMDIR")  # a DICOM file without an image is not a slice: ignored
    np.testing.assert_array_equal(read_volume(folder).voxels, read_volume(files_series_of(folder)).voxels)


def files_series_of(folder):
    """The folder's slices alone, copied next to it (the reference for a folder with extra files)."""
    import shutil

    clean = folder.parent / (folder.name + "_clean")
    clean.mkdir()
    for f in folder.glob("IM*.dcm"):
        shutil.copy(f, clean / f.name)
    return clean


def test_voxel_limit_is_checked_from_headers_before_decoding(tmp_path, known, monkeypatch):
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "big", voxels, affine)
    enhanced = write_enhanced_multiframe(tmp_path / "big.dcm", voxels, affine)
    monkeypatch.setattr(volumes, "MAX_VOLUME_VOXELS", voxels.size - 1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels decoded before the voxel limit was checked")

    monkeypatch.setattr(volumes, "_decoded", no_decoding)
    nifti = write_nifti(tmp_path / "big.nii", voxels, affine)
    for path in (folder, enhanced, nifti):
        with pytest.raises(CaseError, match="16x20x24 = 7680 voxels, above the 7679 voxel limit"):
            read_volume(path)


def test_single_frame_file_and_nifti_faults(tmp_path, known):
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "one", voxels, affine)
    with pytest.raises(CaseError, match="single-frame DICOM file is one slice"):
        read_volume(next(folder.iterdir()))
    nan = voxels.copy()
    nan[1, 2, 3] = np.nan
    with pytest.raises(CaseError, match="NaN or Inf"):
        read_volume(write_nifti(tmp_path / "nan.nii", nan, affine))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), affine), str(tmp_path / "4d.nii"))
    with pytest.raises(CaseError, match="is not one 3D volume"):
        read_volume(tmp_path / "4d.nii")
    (tmp_path / "junk.nii").write_bytes(b"not nifti" * 50)
    with pytest.raises(CaseError, match="not a readable NIfTI file"):
        read_volume(tmp_path / "junk.nii")
    with pytest.raises(CaseError, match="volume file not found"):
        read_volume(tmp_path / "absent.nii.gz")


# ---- preprocessing against independent references -------------------------------------------------


def test_resampling_matches_scipy_map_coordinates():
    rng = np.random.default_rng(3)
    arr = rng.normal(size=(9, 11, 7)).astype(np.float32)
    spacing, target = (2.5, 0.8, 1.0), (1.0, 1.3, 0.45)
    out = volumes.resample(arr, spacing, target)
    # the output grid written out by hand: centred, at the target spacing, within the outer centres
    coords = []
    for n, s, t in zip(arr.shape, spacing, target, strict=True):
        m = int(np.floor((n - 1) * s / t)) + 1
        coords.append(((n - 1) * s / 2 + (np.arange(m) - (m - 1) / 2) * t) / s)
    grid = np.meshgrid(*coords, indexing="ij")
    expected = ndimage.map_coordinates(arr.astype(np.float64), grid, order=1, mode="nearest")
    assert out.shape == expected.shape == (21, 7, 14)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_resampling_reproduces_a_linear_ramp_exactly():
    """Trilinear interpolation reproduces any affine function of position: the resampled value at an
    output voxel is the ramp at that voxel's position in mm."""
    spacing, target = (3.0, 1.0, 0.5), (1.2, 0.7, 0.9)
    shape = (6, 10, 13)
    pos = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    ramp = (2.0 * pos[0] - 0.5 * pos[1] + 1.5 * pos[2] + 7.0).astype(np.float64)
    out = volumes.resample(ramp, spacing, target)
    out_pos = []
    for n, s, t, m in zip(shape, spacing, target, out.shape, strict=True):
        out_pos.append((n - 1) * s / 2 + (np.arange(m) - (m - 1) / 2) * t)
    p = np.meshgrid(*out_pos, indexing="ij")
    np.testing.assert_allclose(out, 2.0 * p[0] - 0.5 * p[1] + 1.5 * p[2] + 7.0, atol=1e-4)


def test_reorient_to_lps_places_a_voxel_where_the_world_says():
    affine = axial_affine((2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))  # axes S, P, L
    arr = np.zeros((4, 5, 6), np.float32)
    arr[1, 2, 3] = 1.0  # world (x, y, z) RAS = (-3, -2, 2)
    out, spacing = volumes.reorient(arr, affine, "LPS")
    # output axis 0 runs along L (-x), axis 1 along P (-y), axis 2 along S; L from x=0 at index 0
    # (the columns already run to L), so index = 3; P likewise 2; S: 1
    assert out.shape == (6, 5, 4) and spacing == (1.0, 1.0, 2.0)
    assert np.argwhere(out == 1.0).tolist() == [[3, 2, 1]]
    ras, _ = volumes.reorient(arr, affine, "RAS")  # R flips L: index 6 - 1 - 3 = 2; A: 5 - 1 - 2 = 2
    assert np.argwhere(ras == 1.0).tolist() == [[2, 2, 1]]
    with pytest.raises(ValueError, match="three axis codes"):
        volumes.reorient(arr, affine, "RAR")


def test_window_and_crop_pad_by_hand():
    x = np.array([[[-1000.0, -100.0, 0.0, 50.0, 400.0]]], np.float32)
    out = volumes.apply_window(x, (0.0, 200.0), 255.0)  # [-100, 100] onto [0, 255]
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 127.5, 191.25, 255.0])
    arr = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    out = volumes.crop_or_pad(arr, (3, 6, 3), pad_value=-1.0)
    np.testing.assert_array_equal(out[:, 1:5, :], arr[1:4])  # 5 -> 3 keeps 1..3; 4 -> 6 pads one each side
    assert (out[:, 0] == -1).all() and (out[:, 5] == -1).all()
    with pytest.raises(CaseError, match="window width"):
        volumes.apply_window(x, (0.0, 0.0), 1.0)


def test_pad_value_is_the_window_minimum_else_the_volume_minimum(files):
    vol = read_volume(files["nifti"])
    big = (40, 30, 30)
    windowed = prepare_volume(vol, VolumeSpec(size=big, window=(0.0, 1600.0), scale=1.0))
    raw = prepare_volume(vol, VolumeSpec(size=big))
    assert windowed[0, 0, 0, 0] == 0.0
    assert raw[0, 0, 0, 0] == vol.voxels.min()


def test_resampling_beyond_the_voxel_limit_is_refused(files, monkeypatch):
    vol = read_volume(files["nifti"])
    monkeypatch.setattr(volumes, "MAX_VOLUME_VOXELS", 10**5)
    with pytest.raises(CaseError, match="resampling would produce"):
        prepare_volume(vol, VolumeSpec(size=(8, 8, 8), spacing=(0.2, 0.2, 0.2)))


def test_nifti_without_orientation_and_files_that_are_no_volume_are_refused(tmp_path, known):
    voxels, _ = known
    nib.save(nib.Nifti1Image(voxels, None), str(tmp_path / "bare.nii"))  # no affine: both codes 0
    assert nib.load(str(tmp_path / "bare.nii")).header["sform_code"] == 0
    with pytest.raises(CaseError, match="holds no orientation"):
        read_volume(tmp_path / "bare.nii")
    (tmp_path / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CaseError, match="^not a volume: expected a NIfTI file"):
        read_volume(tmp_path / "scan.png")


def test_non_orthogonal_orientation_is_refused(tmp_path, known):
    voxels, affine = known
    skewed = affine.copy()
    skewed[:3, 1] = [-0.1, -0.8, 0.0]  # rows not perpendicular to columns
    with pytest.raises(CaseError, match="not orthogonal unit vectors"):
        read_volume(write_dicom_series(tmp_path / "skew", voxels, skewed))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (8, 8)},
        {"size": (8, 8, 0)},
        {"size": (8, 8, 8), "spacing": (1.0, 0.0, 1.0)},
        {"size": (8, 8, 8), "orientation": "RAR"},
        {"size": (8, 8, 8), "orientation": "RASL"},
        {"size": (8, 8, 8), "window": (40.0, 0.0)},
    ],
)
def test_volume_spec_refuses_what_cannot_be_prepared(kwargs):
    with pytest.raises(ValueError):
        VolumeSpec(**kwargs)


def test_enhanced_multiframe_with_a_missing_frame_is_refused(tmp_path, known):
    voxels, affine = known
    order = [k for k in range(16) if k != 11]
    path = write_enhanced_multiframe(tmp_path / "gap.dcm", voxels, affine, frame_order=order)
    with pytest.raises(CaseError) as err:
        read_volume(path)
    assert err.value.reason == (
        "multi-frame DICOM has a gap of 5 mm between slices 11 and 12 where the step is 2.5 mm: a slice is missing"
    )


def test_legacy_multiframe_frame_offsets(tmp_path, known, files):
    import pydicom

    voxels, affine = known
    ds = pydicom.dcmread(files["legacy"])
    del ds.SpacingBetweenSlices
    ds.GridFrameOffsetVector = [2.5 * k for k in range(16)]
    ds.save_as(tmp_path / "offsets.dcm")
    np.testing.assert_array_equal(read_volume(tmp_path / "offsets.dcm").voxels, read_volume(files["legacy"]).voxels)
    del ds.GridFrameOffsetVector
    del ds.SliceThickness
    ds.save_as(tmp_path / "no_step.dcm")
    with pytest.raises(CaseError, match="the distance between its frames is unknown"):
        read_volume(tmp_path / "no_step.dcm")


def test_compressed_slices_without_a_decoder_name_the_syntax_and_the_package(tmp_path, known, monkeypatch):
    import pydicom.pixels
    from pydicom.uid import RLELossless

    voxels, affine = known
    folder = write_dicom_series(tmp_path / "rle", voxels, affine, compress=RLELossless)

    class Missing:
        is_available = False
        missing_dependencies = ["pylibjpeg-rle"]

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda syntax: Missing())
    with pytest.raises(CaseError) as err:
        read_volume(folder)
    assert err.value.reason.startswith(
        "compressed DICOM transfer syntax RLE Lossless (1.2.840.10008.1.2.5) has no decoder installed; install "
    )
    assert "pylibjpeg-rle" in err.value.reason


def test_broken_codestream_is_corrupt_naming_the_syntax(tmp_path, known):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    voxels, affine = known
    folder = write_dicom_series(tmp_path / "rle", voxels, affine, compress=RLELossless)
    victim = sorted(folder.iterdir())[2]
    ds = pydicom.dcmread(victim)
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\xff" * 8])
    ds.save_as(victim)
    rle = r"RLE Lossless \(1\.2\.840\.10008\.1\.2\.5\)"
    with pytest.raises(CaseError, match=rf"^corrupt or truncated DICOM pixel data \({rle}\)"):
        read_volume(folder)


def test_malformed_dicom_header_fails_the_case_not_the_run(files, monkeypatch):
    def malformed(ds, index):
        return int("abc")  # what int(ds.Rows) raises on a header element of the wrong form

    monkeypatch.setattr(volumes, "_plane_of", malformed)
    with pytest.raises(CaseError, match="^malformed DICOM header: ValueError: invalid literal"):
        read_volume(files["series"])


def test_real_philips_enhanced_mr_geometry_matches_nibabels_dicom_reader(tmp_path):
    """A vendor file (Philips Achieva Enhanced MR, 176 sagittal frames, oblique; pixel values zeroed
    by its publisher) shipped with nibabel's tests: its RAS-canonical grid must match the one nibabel's
    independent DICOM wrapper derives (world positions to 0.01 mm). Its rows and columns share size
    and spacing and its pixels are zero, so a row/column swap shows only in the known-volume tests."""
    import gzip
    import warnings
    from pathlib import Path

    import pydicom

    source = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    if not source.exists():
        pytest.skip("nibabel's test data (philips_mprage.dcm.gz) is not installed")
    path = tmp_path / "mprage.dcm"
    path.write_bytes(gzip.decompress(source.read_bytes()))
    vol = read_volume(path)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom import dicomwrappers

        wrapper = dicomwrappers.wrapper_from_data(header)
        ref_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrapper.affine  # its LPS to RAS
        ref_shape = (*wrapper.image_shape[:2], int(header.NumberOfFrames))
    ref = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(ref_shape, np.float32), ref_affine))
    mine = nib.as_closest_canonical(nib.Nifti1Image(vol.voxels, vol.affine))
    assert mine.shape == ref.shape == (176, 256, 256)
    np.testing.assert_allclose(mine.affine, ref.affine, atol=0.01)
    assert vol.acquisition["manufacturer"] == "Philips Medical Systems"
    assert vol.acquisition["manufacturer_model"] == "Achieva"


def test_a_hidden_dicom_slice_still_counts(tmp_path, known):
    """An end slice hidden by its name (no gap would reveal it) is read, not skipped."""
    voxels, affine = known
    folder = write_dicom_series(tmp_path / "hidden", voxels, affine, shuffle_names=False)
    last = sorted(folder.iterdir())[-1]
    last.rename(folder / ".IM_last.dcm")
    assert read_volume(folder).voxels.shape == voxels.shape


def test_a_cut_jpeg_ls_slice_is_a_failure_not_another_volume(tmp_path, known):
    """libjpeg/CharLS may fill a truncated JPEG-family codestream in without an error; a series slice
    goes through the 2D path's decoder (dicom_pixels), which refuses a frame without its FFD9 marker."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import JPEGLSLossless

    voxels, affine = known
    folder = write_dicom_series(tmp_path / "jls", voxels, affine, compress=JPEGLSLossless)
    np.testing.assert_array_equal(
        read_volume(folder).voxels, read_volume(write_dicom_series(tmp_path / "raw", voxels, affine)).voxels
    )
    victim = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(victim)
    (frame,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 2 // 3]])
    ds.save_as(victim)
    with pytest.raises(CaseError, match=r"^corrupt or truncated DICOM pixel data \(JPEG-LS Lossless.*end-of-image"):
        read_volume(folder)
