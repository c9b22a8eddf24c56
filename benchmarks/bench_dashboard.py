"""Dashboard scale: does every page of a 10,000,000-prediction bundle open as fast as a 1,000-prediction one?

Two bundles hold the same JSON parts (the dashboard tests' fixture bundle: metrics, calibration,
gates, subgroups, curves, shift, cases, sites, failures; tests/test_dashboard_data.py) and differ only
in ``predictions.parquet``: ``--small`` vs ``--large`` rows over the same three sites, written as
``validate run`` writes it (row groups of :data:`validate.bundle.PARQUET_ROW_GROUP`). Each page is opened
in a fresh Streamlit ``AppTest`` session on a bundle path new to the process (cold caches), several
times in alternation; the medians are compared. Target: every page within 2x. The Overview and the
analysis pages read the precomputed JSON only; the Cases page reads predictions.parquet only when its
browser of every error is turned on (:mod:`validate.case_pages`: the site's row groups, then a
page's), once per site and choice (then cached): that step is timed apart, first and cached.

Run: ``.venv/bin/python benchmarks/bench_dashboard.py [--repeats 3] [--large 10000000]``. Prints the
timings and ratios; exits 1 when a page's ratio exceeds the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

TARGET = 2.0
SITES = ("alpha", "beta", "gamma")  # the fixture bundle's sites
PAGES = (
    None,  # the Overview (the app's default page)
    "views/reliability.py",
    "views/subgroups.py",
    "views/calibration.py",
    "views/discrimination.py",
    "views/cases.py",
    "views/compare.py",
    "views/shift.py",
    "views/comparison.py",
    "views/decision.py",
    "views/synthesis.py",
    "views/fairness.py",
)


def write_predictions(path: Path, n: int, seed: int = 0) -> None:
    """``n`` binary predictions over the fixture's sites, grouped by site, in a bundle's row groups.
    Built column by column with pyarrow (10M identifiers in seconds, no Python object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from validate.bundle import PARQUET_ROW_GROUP

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int8)
    logit = rng.normal(0, 1.5, n) + 1.2 * (2 * y.astype(float) - 1)
    counts = [n // len(SITES) + (k < n % len(SITES)) for k in range(len(SITES))]
    site = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(SITES), dtype=np.int32), counts)), pa.array(SITES)
    )
    hexes = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), 20, "0")
    table = pa.table(
        {
            "case_id": hexes,
            "site": site,
            "patient_id": pc.binary_join_element_wise("p", hexes, ""),
            "y": y,
            "logit": logit,
            "sex": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 2, n).astype(np.int32)), ["female", "male"]),
        }
    )
    pq.write_table(table, path, row_group_size=PARQUET_ROW_GROUP)


def write_bundle(folder: Path, n_predictions: int) -> Path:
    """The fixture bundle (every page's JSON) with ``n_predictions`` rows in predictions.parquet."""
    from test_dashboard_data import write_fixture_run

    write_fixture_run(folder, image_root=None)
    write_predictions(folder / "predictions.parquet", n_predictions)
    return folder


def open_page(runs_dir: Path, page: str | None = None, again: bool = False, browse: bool = False) -> float:
    """Seconds to open ``page`` (None: the Overview) on ``runs_dir`` in a fresh session; ``again``: the
    time of a second open in the same process (the caches warm); ``browse``: the Cases page's browser
    of every error turned on (the seconds of that step alone)."""
    from streamlit.testing.v1 import AppTest

    os.environ["VALIDATE_DASHBOARD_RUNS"] = str(runs_dir)
    elapsed = 0.0
    for _ in range(2 if again else 1):
        t0 = time.perf_counter()
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=900)
        if page is not None:
            at.switch_page(page)
        at.run()
        if browse:
            t0 = time.perf_counter()
            at.toggle(key="cases-browse").set_value(True).run()
            at.number_input(key=f"cases-all-{SITES[0]}-page").set_value(1000).run()  # a page far down
        elapsed = time.perf_counter() - t0
        if at.exception:
            raise RuntimeError(f"the dashboard raised on {runs_dir} {page}: {at.exception[0].message}")
    return elapsed


def _copies(source: Path, root: Path, k: int) -> list[Path]:
    """``k`` runs folders holding ``source``'s bundle by hard links (same bytes, new paths: cold caches)."""
    out = []
    for r in range(k):
        dst = root / f"copy{r}" / "run"
        dst.mkdir(parents=True)
        for f in source.iterdir():
            os.link(f, dst / f.name)
        out.append(dst.parent)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", type=int, default=10_000_000)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--pages", nargs="*", metavar="NAME", help="only these pages (overview, cases, ...)")
    args = ap.parse_args(argv)
    pages = [p for p in PAGES if not args.pages or (p or "views/overview.py")[6:-3] in args.pages]
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # no "missing ScriptRunContext" notes of bare mode
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        small_src = write_bundle(tmp / "small" / "run", args.small)
        large_src = write_bundle(tmp / "large" / "run", args.large)
        size = (large_src / "predictions.parquet").stat().st_size / 1e6
        print(f"bundles written in {time.perf_counter() - t0:.1f} s (large predictions.parquet: {size:.0f} MB)")
        open_page(small_src.parent)  # imports and the first AppTest start-up are not part of either number
        print(f"{'page':<28}{args.small:>12,}{args.large:>14,}   ratio")
        for page in pages:
            small = _copies(small_src, tmp / f"s-{page or 'overview'}".replace("/", "-"), args.repeats)
            large = _copies(large_src, tmp / f"l-{page or 'overview'}".replace("/", "-"), args.repeats)
            ts, tl = [], []
            for r in range(args.repeats):
                ts.append(open_page(small[r], page))
                tl.append(open_page(large[r], page))
            ms, ml = statistics.median(ts), statistics.median(tl)
            worst = max(worst, ml / ms)
            name = (page or "views/overview.py").removeprefix("views/").removesuffix(".py")
            print(f"{name:<28}{ms * 1000:>10.0f} ms{ml * 1000:>10.0f} ms   {ml / ms:5.2f}", flush=True)
        if "views/cases.py" in pages:
            first = open_page(_copies(large_src, tmp / "browse", 1)[0], "views/cases.py", browse=True)
            again = open_page(_copies(large_src, tmp / "again", 1)[0], "views/cases.py", again=True, browse=True)
            print(
                f"cases, every error of site {SITES[0]} on request ({args.large:,}; not a target): first "
                f"{first * 1000:.0f} ms (reads the site's rows), then page 1,000 {again * 1000:.0f} ms (cached)"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"worst ratio {worst:.2f} (target <= {TARGET:.0f}); peak RSS of this process {peak:.2f} GB")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
