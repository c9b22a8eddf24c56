"""Decode speed of each compressed-DICOM transfer syntax, per pydicom pixel-data plugin.

A 512 x 512 grey image (12 bits stored in 16; 8 bits for JPEG Baseline, which holds no more) is
made by tests/fixtures/dicom_codecs/make_fixtures.py's ``source_pixels``, encoded into each syntax
by the same encoders as the test fixtures (dcmtk's dcmcjpeg for the JPEG family, pydicom with
pyjpegls / pylibjpeg-openjpeg / its RLE encoder for the rest), and decoded by every plugin pydicom
has available for that syntax: the time is the best of ``--repeats`` decodes of the frame (the
file is read once). Printed per syntax: milliseconds per plugin, and the ratio of each plugin's
time to pylibjpeg's (> 1: slower than pylibjpeg); a plugin that cannot decode it says so.

The suite decodes through pydicom's default plugin order, with pylibjpeg (+ pyjpegls for JPEG-LS)
as the declared decoders; this benchmark is the evidence for that choice.

Run: ``.venv/bin/python benchmarks/bench_dicom_codecs.py [--repeats N] [--json FILE]``. Syntaxes of
the JPEG family are skipped (with a note) where dcmtk is not installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "dicom_codecs"))

from make_fixtures import encode, source_pixels, write_source  # noqa: E402

SIDE = 512
# name -> (source bit depth, syntax, encoder)
SYNTAXES = {
    "JPEG Baseline 8-bit (.4.50)": ("grey8", "1.2.840.10008.1.2.4.50", "dcmcjpeg +eb +q 90 +sr +un"),
    "JPEG Extended 12-bit (.4.51)": ("grey12", "1.2.840.10008.1.2.4.51", "dcmcjpeg +ee +q 90 +sr +un"),
    "JPEG Lossless (.4.57)": ("grey12", "1.2.840.10008.1.2.4.57", "dcmcjpeg +el +sv 6"),
    "JPEG Lossless SV1 (.4.70)": ("grey12", "1.2.840.10008.1.2.4.70", "dcmcjpeg +e1"),
    "JPEG-LS Lossless (.4.80)": ("grey12", "1.2.840.10008.1.2.4.80", "pydicom"),
    "JPEG-LS Near-Lossless (.4.81)": ("grey12", "1.2.840.10008.1.2.4.81", "pydicom"),
    "JPEG 2000 Lossless (.4.90)": ("grey12", "1.2.840.10008.1.2.4.90", "pydicom"),
    "JPEG 2000 (.4.91)": ("grey12", "1.2.840.10008.1.2.4.91", "pydicom"),
    "RLE Lossless (.5)": ("grey12", "1.2.840.10008.1.2.5", "pydicom"),
}


def time_plugins(path: Path, syntax: str, repeats: int) -> dict[str, float | str]:
    """Best-of-``repeats`` decode time in ms per available plugin (or the reason it failed)."""
    import pydicom
    from pydicom.pixels import get_decoder

    ds = pydicom.dcmread(path)
    decoder = get_decoder(syntax)
    out: dict[str, float | str] = {}
    for plugin in decoder.available_plugins:
        try:
            decoder.as_array(ds, decoding_plugin=plugin)
        except Exception as exc:
            out[plugin] = f"cannot decode: {str(exc).splitlines()[-1].strip()[:80]}"
            continue
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            decoder.as_array(ds, decoding_plugin=plugin)
            best = min(best, time.perf_counter() - start)
        out[plugin] = best * 1000.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, float | str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for depth in ("grey12", "grey8"):
            write_source(folder / f"{depth}.dcm", source_pixels(depth, SIDE))
        for name, (depth, syntax, encoder) in SYNTAXES.items():
            if encoder.startswith("dcmcjpeg") and shutil.which("dcmcjpeg") is None:
                print(f"{name}: skipped (dcmtk's dcmcjpeg not installed)")
                continue
            path = folder / f"{syntax}.dcm"
            encode(folder / f"{depth}.dcm", path, syntax, encoder)
            results[name] = times = time_plugins(path, syntax, args.repeats)
            ref = times.get("pylibjpeg")
            cells = []
            for plugin, t in times.items():
                if isinstance(t, str):
                    cells.append(f"{plugin} {t}")
                else:
                    ratio = f" ({t / ref:.2f}x pylibjpeg)" if isinstance(ref, float) and plugin != "pylibjpeg" else ""
                    cells.append(f"{plugin} {t:.2f} ms{ratio}")
            print(f"{name}: " + "; ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
