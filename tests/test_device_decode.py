"""JPEG and JPEG 2000 decoded by nvImageCodec (validate.scoring.device_decode, the extra gpu-decode).

Expected pixels come from Pillow (libjpeg-turbo, OpenJPEG) and expected statistics from numpy on those
pixels (tests/test_scoring_image_stats.py's ``reference_stats``). nvImageCodec's CPU backends run on
any machine where the package is installed, so the device path's plumbing (batch decode, luma, counts,
resize, fallback to the CPU reader, failures) is checked without a GPU; the GPU's own codecs are
checked against Pillow within the codec tolerance when CUDA is there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from validate.scoring import device_decode
from validate.scoring.evaluator import EngineOptions, ImageCases, score_shards
from validate.scoring.inputs import IMAGE_STAT_COLUMNS, Preprocessing

from test_scoring_image_stats import reference_stats

needs_nvimgcodec = pytest.mark.skipif(
    device_decode.nvimgcodec() is None, reason="nvidia-nvimgcodec not installed (pip install 'validate[gpu-decode]')"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _image(rng, h, w, grey):
    # smooth structure plus noise: compresses like a photograph
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    planes = [np.sin(2 * np.pi * (xx * (1 + c) + yy * (2 - c / 2))) for c in range(1 if grey else 3)]
    img = np.clip(127.5 + 90 * np.stack(planes, -1) + rng.normal(0, 10, (h, w, len(planes))), 0, 255)
    img = img.astype(np.uint8)
    return img[:, :, 0] if grey else img


def _write(folder, name, img):
    path = folder / name
    Image.fromarray(img).save(path, **({"quality": 85} if path.suffix in (".jpg", ".jpeg") else {}))
    return path


def _pillow(path, channels):
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        return np.asarray(im)


@needs_nvimgcodec
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name,grey", [("a.jpg", False), ("b.jpeg", True), ("c.jp2", False), ("d.jp2", True)])
def test_cpu_backends_give_pillows_pixels_and_numpys_statistics(tmp_path, name, grey, channels):
    path = _write(tmp_path, name, _image(np.random.default_rng(1), 37, 53, grey))
    spec = Preprocessing(kind="image", size=None, channels=channels, scale=255.0)
    (got,) = device_decode.DeviceDecoder(torch.device("cpu"), spec).decode([path.read_bytes()])
    assert got is not None, "the device path must take an 8-bit JPEG / JPEG 2000"
    x, stats = got
    want = _pillow(path, channels)
    want = want[:, :, None] if want.ndim == 2 else want
    assert x.dtype == torch.uint8
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), want)
    ref = reference_stats(want, 255.0)
    np.testing.assert_allclose(stats, [ref[c] for c in IMAGE_STAT_COLUMNS], rtol=1e-6, atol=1e-9)


@needs_nvimgcodec
def test_resize_on_the_device_path_is_the_cpu_interpolation(tmp_path):
    path = _write(tmp_path, "a.jpg", _image(np.random.default_rng(2), 61, 47, False))
    spec = Preprocessing(kind="image", size=(24, 32), channels=3, scale=255.0)
    (got,) = device_decode.DeviceDecoder(torch.device("cpu"), spec).decode([path.read_bytes()])
    pixels = torch.from_numpy(_pillow(path, 3).copy()).permute(2, 0, 1)[None].float()
    want = torch.nn.functional.interpolate(pixels, size=(24, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-4)


@needs_nvimgcodec
def test_what_the_device_does_not_take_is_left_to_the_cpu(tmp_path):
    sixteen = tmp_path / "deep.jp2"
    Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50).save(sixteen)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 20), (10, 200, 30, 5)).save(cmyk)
    blobs = [sixteen.read_bytes(), cmyk.read_bytes(), b"not a codestream", (tmp_path / "x").write_bytes(b"") or b""]
    spec = Preprocessing(kind="image", size=(8, 8), channels=1, scale=65535.0)
    assert device_decode.DeviceDecoder(torch.device("cpu"), spec).decode(blobs) == [None, None, None, None]


@needs_nvimgcodec
def test_evaluator_decoding_on_the_device_scores_what_the_cpu_path_scores(tmp_path, monkeypatch):
    """Mixed batches (JPEG, JPEG 2000, PNG, 16-bit JPEG 2000, a missing and a corrupt file): the same
    logits, image statistics and failures as the CPU path, and the device path really decoded."""
    rng = np.random.default_rng(3)
    paths = []
    for i in range(14):
        name = f"c{i}" + [".jpg", ".jp2", ".png", ".jpeg"][i % 4]
        paths.append(str(_write(tmp_path, name, _image(rng, 30 + i, 41, grey=i % 3 == 0))))
    deep = tmp_path / "deep.jp2"
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(deep)  # beyond scale 255: a failure
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    paths += [str(deep), str(tmp_path / "missing.jpg"), str(tmp_path / "bad.jpg"), ""]
    taken = []
    decode = device_decode.DeviceDecoder.decode

    def counting(self, blobs):
        out = decode(self, blobs)
        taken.extend(r is not None for r in out)
        return out

    monkeypatch.setattr(device_decode.DeviceDecoder, "decode", counting)
    spec = Preprocessing(kind="image", size=(16, 16), channels=1, scale=255.0)

    def model(x):
        return x.reshape(len(x), -1)[:, :3] * torch.tensor([1.0, -2.0, 0.5])

    def run(flag):
        options = EngineOptions(device=torch.device("cpu"), batch_size=5, device_decode=flag)
        cases = ImageCases(paths, spec)
        return score_shards(
            model, cases, [0], n_cases=len(paths), shard_size=64, n_outputs=3, spec=spec, options=options
        )[0]

    cpu, dev = run(False), run(True)
    assert sum(taken) == 11  # every 8-bit JPEG / JPEG 2000 went to the device path
    assert cpu.failures == dev.failures and len(cpu.failures) == 4
    np.testing.assert_array_equal(cpu.positions, dev.positions)
    np.testing.assert_array_equal(cpu.logits, dev.logits)
    np.testing.assert_array_equal(cpu.image_stats, dev.image_stats)


def test_decoding_on_the_device_is_for_image_inputs_on_cuda_unless_forced(monkeypatch):
    image = Preprocessing(kind="image", size=(8, 8))
    monkeypatch.setattr(device_decode, "nvimgcodec", lambda: object())
    assert device_decode.wanted(None, torch.device("cuda", 0), image)
    assert not device_decode.wanted(None, torch.device("cpu"), image)
    assert device_decode.wanted(True, torch.device("cpu"), image)
    assert not device_decode.wanted(False, torch.device("cuda", 0), image)
    assert not device_decode.wanted(True, torch.device("cuda", 0), Preprocessing(kind="dicom", size=(8, 8)))
    monkeypatch.setattr(device_decode, "nvimgcodec", lambda: None)
    assert not device_decode.wanted(True, torch.device("cuda", 0), image)  # not installed: the CPU decodes


@needs_cuda
@needs_nvimgcodec
@pytest.mark.parametrize("name,tolerance", [("a.jpg", 4), ("b.jp2", 0)])
def test_gpu_codecs_match_pillow_within_the_codec_tolerance(tmp_path, name, tolerance):
    """nvJPEG's IDCT and chroma upsampling may differ from libjpeg-turbo by a few levels on lossy data;
    JPEG 2000's reversible 5/3 wavelet (Pillow's default) decodes exactly."""
    path = _write(tmp_path, name, _image(np.random.default_rng(4), 224, 224, False))
    spec = Preprocessing(kind="image", size=None, channels=3, scale=255.0)
    (got,) = device_decode.DeviceDecoder(torch.device("cuda", 0), spec).decode([path.read_bytes()])
    assert got is not None and got[0].is_cuda
    diff = np.abs(got[0].permute(1, 2, 0).cpu().numpy().astype(int) - _pillow(path, 3).astype(int))
    assert diff.max() <= tolerance
    assert diff.mean() <= 0.5


@needs_nvimgcodec
def test_cache_keys_name_the_device_decoder_where_the_device_decodes():
    # a cache filled by nvJPEG on a GPU must not be read back by a CPU run of the same files (or the
    # other way round): its pixels may differ by a few levels
    from validate.scoring.pipeline import _decoding_key
    from validate.scoring.volume_inputs import preprocessing_key

    spec = Preprocessing(kind="image", size=(16, 16), channels=1, scale=255.0)
    assert _decoding_key(torch.device("cpu"), spec) == preprocessing_key(spec)  # CPU caches stay valid
    on_gpu = _decoding_key(torch.device("cuda"), spec)
    assert on_gpu["device_decode"].startswith("nvimgcodec ")
    assert {k: v for k, v in on_gpu.items() if k != "device_decode"} == preprocessing_key(spec)
    dicom = Preprocessing(kind="dicom", size=(16, 16), channels=1, scale=255.0)
    assert _decoding_key(torch.device("cuda"), dicom) == preprocessing_key(dicom)  # DICOM decodes on the CPU
