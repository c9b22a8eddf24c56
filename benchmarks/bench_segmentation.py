"""Segmentation scoring memory: peak RSS of ``score_protocol`` on N and 10×N cases (issue #20).

Scoring keeps per-case metric rows, streams the pixel summaries to Parquet and keeps the worst cases
in bounded heaps, so memory should stay flat in the number of cases. Each size runs in a child
process of its own (a fresh interpreter: its peak RSS, ``ru_maxrss``, is that run's alone) on a
synthetic site of ultrasound-sized images (HC18's 800×540 downsized 2×: 270×400) with elliptical
masks and a small convolutional model exported with torch.export.

    python benchmarks/bench_segmentation.py            # 40 and 400 cases
    python benchmarks/bench_segmentation.py --cases 100 --factor 10

Prints the peak RSS of each size and their ratio; the target is 10× cases ≤ 1.2× peak RSS. Exits 1
when the ratio is above the target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

TARGET = 1.2
H, W = 270, 400

CHILD = """
import json, resource, sys
from validate.scoring import score_protocol
res = score_protocol(sys.argv[1], out_dir=sys.argv[2], device="cpu", batch_size=8, workers=0, progress=False)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"cases": res.counts["scored"], "peak_mib": peak_kib / 1024}))
"""


def make_site(folder: Path, n: int) -> Path:
    """``n`` synthetic cases (image with a bright ellipse, its 0/255 mask) and a protocol scoring them."""
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image

    root = folder / "site"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    rows = []
    for i in range(n):
        cy, cx, a, b = (
            H / 2 + rng.uniform(-20, 20),
            W / 2 + rng.uniform(-30, 30),
            rng.uniform(60, 110),
            rng.uniform(40, 90),
        )
        inside = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1
        image = np.clip(rng.normal(60, 20, (H, W)) + 120 * inside, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"img{i}.png")
        Image.fromarray((inside * 255).astype(np.uint8)).save(root / f"mask{i}.png")
        rows.append(
            {"case_id": f"c{i}", "patient_id": f"p{i}", "image": f"img{i}.png", "mask": f"mask{i}.png", "px": 0.3}
        )
    pd.DataFrame(rows).to_csv(folder / "site.csv", index=False)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
    ).eval()
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[2].weight.fill_(0.5)
    x = torch.zeros(2, 1, 96, 128)
    torch.export.save(
        torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},)), str(folder / "m.pt2")
    )
    protocol = folder / "p.yaml"
    protocol.write_text(
        textwrap.dedent(
            """\
            name: bench
            task: segmentation
            labels: [head]
            input: {kind: image, size: [96, 128]}
            segmentation: {label_values: {head: 255}, spacing_column: px, biometry: ellipse_circumference}
            model: {checkpoint: m.pt2, format: export}
            sites:
              - {id: dev, manifest: site.csv, image_root: site, role: development}
            """
        )
    )
    return protocol


def peak(folder: Path, n: int) -> dict:
    protocol = make_site(folder / f"n{n}", n)
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(protocol), str(folder / f"n{n}" / "out")],
        check=True,
        capture_output=True,
        text=True,
        cwd=repo,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        small = peak(Path(tmp), args.cases)
        large = peak(Path(tmp), args.cases * args.factor)
    ratio = large["peak_mib"] / small["peak_mib"]
    print(f"{small['cases']:>6} cases: peak RSS {small['peak_mib']:8.1f} MiB")
    print(f"{large['cases']:>6} cases: peak RSS {large['peak_mib']:8.1f} MiB")
    verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
    print(f"{args.factor}x cases / 1x: {ratio:.3f} x peak RSS (target <= {TARGET}) {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
