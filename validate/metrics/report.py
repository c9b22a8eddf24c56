"""The Metrics JSON (DESIGN.md) of a predictions table: pooled, per site, per subgroup value."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from validate import progress
from validate.metrics.blocks import binary_block, multiclass_block, multilabel_block
from validate.metrics.operating import threshold_for_sensitivity
from validate.metrics.settings import MetricSettings
from validate.metrics.workers import choose_workers, run_blocks

MISSING_VALUE = "missing"


def _clusters(frame: pd.DataFrame, settings: MetricSettings) -> np.ndarray | None:
    """Cluster codes for the bootstrap: (site, ``cluster_by``) when some pair repeats, else None. The
    site is part of the key: without a ``patient_id`` it defaults to ``case_id``, which is unique only
    within a site (:func:`validate.predictions.cluster_keys`)."""
    from validate.predictions import cluster_keys

    return _repeating(cluster_keys(frame, settings.cluster_by))


def _repeating(codes: np.ndarray | None) -> np.ndarray | None:
    """``codes`` when some code repeats (clusters to resample), else None (every case its own unit)."""
    if codes is None or codes.size < 2:
        return None
    return codes if pd.Series(codes).duplicated().any() else None


class _Rows:
    """The cases ``rows`` (a slice, or an index array) of a table-wide array, gathered only when the
    block is evaluated: the blocks of a report are described before any is evaluated, and holding
    each block's own copies (the pooled block a copy of every case) would cost as much memory as
    the table again per block. Pickled (to a worker process or a Dask task) as the gathered array."""

    __slots__ = ("full", "rows")

    def __init__(self, full: np.ndarray, rows: slice | np.ndarray):
        self.full, self.rows = full, rows

    def __len__(self) -> int:
        if isinstance(self.rows, slice):
            return len(range(*self.rows.indices(len(self.full))))
        return len(self.rows)

    def gather(self) -> np.ndarray:
        """The block's array: a view for a slice, a copy for an index array."""
        return self.full[self.rows]

    def __reduce__(self):
        return (np.asarray, (self.gather(),))


def _gathered(v):
    """A :class:`_Rows` as its array; anything else as it is."""
    return v.gather() if isinstance(v, _Rows) else v


def _rows_of(mask: np.ndarray) -> slice | np.ndarray:
    """The cases of a boolean ``mask`` as a slice when they are contiguous (every case, or one site
    of a table sorted by site), else as an index array."""
    idx = np.flatnonzero(mask)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def metrics_report(
    table,
    *,
    task: str | None = None,
    settings: MetricSettings = MetricSettings(),
    class_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    subgroup_columns: Sequence[str] = (),
    subgroups: pd.DataFrame | None = None,
    development_site: str | None = None,
    smooth_intervals: bool = True,
    workers: int | None = None,
) -> dict:
    """The whole Metrics JSON from a predictions table.

    ``table``: a :class:`validate.predictions.PredictionsTable` or a predictions DataFrame.
    ``overall`` pools every site, its bootstrap stratified by site; ``sites`` has one BLOCK per site;
    ``subgroups`` one BLOCK per value of each column in ``subgroup_columns`` (looked up in
    ``subgroups`` — e.g. :func:`validate.cohort.derive_subgroups` output, row-aligned with the table —
    then in the table's attributes; missing values form the group ``"missing"``), stratified by site.
    The bootstrap resamples ``settings.cluster_by`` (patient) clusters when a value repeats.
    ``development_site``: where the threshold for ``settings.target_sensitivity`` is found (binary);
    it is then carried unchanged to every other block. Without it each block finds its own.
    ``workers``: processes evaluating the blocks side by side (same numbers; see
    :mod:`validate.metrics.workers`); ``None`` decides from the amount of work.
    """
    from validate.predictions import PredictionsTable, table_from_frame

    if not isinstance(table, PredictionsTable):
        table = table_from_frame(table, task=task, class_names=class_names, label_names=label_names)
    task = task or table.task
    if task != table.task:
        raise ValueError(f"table holds a {table.task} task, not {task}")
    frame = table.frame
    carry = _carried_threshold(table, settings, development_site) if task == "binary" else None
    # blocks are described first, then evaluated (here or in worker processes), then placed
    jobs = _BlockJobs(table, settings, smooth_intervals, carry, list(class_names or label_names or table.names or []))
    report: dict = {
        "task": task,
        "n_bootstrap": settings.n_bootstrap,
        "ci_level": settings.ci_level,
        "seed": settings.seed,
        "overall": None,
        "sites": {},
        "subgroups": {},
    }
    jobs.add(("overall",), np.ones(len(frame), dtype=bool), stratified=True)
    sites = table.sites()
    single = len(sites) == 1 and carry is None
    if not single:
        for site in sites:
            mask = (frame["site"] == site).to_numpy(dtype=bool)
            jobs.add(("sites", site), mask, stratified=False, own_threshold=(site == development_site))
    for col in subgroup_columns:
        labels = _subgroup_labels(col, frame, subgroups)
        report["subgroups"][col] = {}
        for v in sorted(set(labels)):
            jobs.add(("subgroups", col, v), labels == v, stratified=True)

    sizes = [len(job["y"]) for job in jobs.jobs]
    with progress.phase("metrics", total=len(jobs.jobs), unit="blocks") as ph:
        results = run_blocks(
            _block,
            jobs.jobs,
            sizes,
            choose_workers(workers, sizes, settings.n_bootstrap),
            on_done=block_progress(ph, jobs.places),
        )
    _place(report, jobs.places, results)
    if single:
        # one site: its block is the pooled block (same cases, a single stratum)
        report["sites"][sites[0]] = copy.deepcopy(report["overall"])
    return report


def block_progress(ph: progress.Phase, places: Sequence[tuple]) -> Callable[[int], None]:
    """The ``on_done`` of :func:`run_blocks` advancing ``ph`` once per block (a block evaluated again
    after a worker pool broke is not counted twice), naming the block that finished."""
    seen: set[int] = set()

    def done(i: int) -> None:
        if i not in seen:
            seen.add(i)
            ph.advance(detail="/".join(str(part) for part in places[i]))

    return done


def _carried_threshold(table, settings: MetricSettings, development_site: str | None) -> float | None:
    """The threshold reaching ``settings.target_sensitivity`` at the development site (binary), carried
    to every other block; None without a development site, a target, its cases or a finite threshold."""
    if development_site is None or settings.target_sensitivity is None:
        return None
    dev = (table.frame["site"] == development_site).to_numpy()
    if not dev.any():
        return None
    t = threshold_for_sensitivity(table.y()[dev], table.prob()[dev], settings.target_sensitivity)
    return t if np.isfinite(t) else None


class _BlockJobs:
    """The blocks of one report, described as keyword arguments of :func:`_block` (so that worker
    processes can evaluate them), with where each result goes in the report."""

    def __init__(self, table, settings: MetricSettings, smooth_intervals: bool, carry: float | None, names: list[str]):
        from validate.predictions import cluster_keys, site_codes

        self.table, self.settings, self.smooth_intervals = table, settings, smooth_intervals
        self.carry, self.names = carry, names
        self.jobs: list[dict] = []
        self.places: list[tuple] = []
        # table-wide, once: every block slices these (codes keep their order in a subset, so a block's
        # bootstrap numbers its units as from its own text keys)
        self.clusters = _repeating(cluster_keys(table.frame, settings.cluster_by))
        self.strata = site_codes(table.frame)
        if table.task == "binary":
            self.arrays = {"y": table.y(), "p": table.prob(), "logits": table.logit()}
            self.arrays["scores"] = table.score()  # the logits column itself when given (a view)
        else:
            self.arrays = {
                "y": table.y() if table.task == "multiclass" else table.Y(),
                "p": table.probs(),
                "scores": table.scores(),
            }

    def add(self, place: tuple, mask: np.ndarray, stratified: bool, own_threshold: bool = False) -> None:
        """The block of the cases in ``mask``, bootstrapped by site strata when ``stratified``; a block
        with ``own_threshold`` finds its own target-sensitivity threshold instead of the carried one."""
        rows = _rows_of(mask)
        job = {
            "task": self.table.task,
            "settings": self.settings,
            "smooth_intervals": self.smooth_intervals,
            "strata": _Rows(self.strata, rows) if stratified else None,
            "clusters": None if self.clusters is None else _Rows(self.clusters, rows),
        }
        job.update({name: _Rows(full, rows) for name, full in self.arrays.items()})
        if self.table.task == "binary":
            job["threshold_carry"] = None if own_threshold else self.carry
        else:
            job["names"] = self.names or None
        self.jobs.append(job)
        self.places.append(place)


def _subgroup_labels(col: str, frame: pd.DataFrame, subgroups: pd.DataFrame | None) -> np.ndarray:
    """Each case's group of subgroup column ``col`` as text (derived subgroups first, then the table's
    attributes); a missing value is the group ``"missing"``."""
    if subgroups is not None and col in subgroups:
        values = subgroups[col].reset_index(drop=True)
    elif col in frame:
        values = frame[col]
    else:
        raise ValueError(f"subgroup column {col!r} is neither derived nor a table attribute")
    # the label once per distinct value, not per case (an object column mixing numbers, where
    # hashing equates 1, 1.0 and True, is labelled case by case)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if values.dtype == object and not all(isinstance(v, str) for v in uniques):
        return values.map(_group_label).to_numpy(dtype=object)
    labels = np.array([_group_label(v) for v in uniques] + [MISSING_VALUE], dtype=object)[codes]
    missing = np.flatnonzero(codes < 0)  # the kinds of missing are told apart as before (pd.NA is "<NA>")
    if missing.size:
        labels[missing] = values.iloc[missing].map(_group_label).to_numpy(dtype=object)
    return labels


def _group_label(v) -> str:
    """A subgroup value as its group's label: its text, ``"missing"`` for None or NaN."""
    return MISSING_VALUE if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _place(report: dict, places: list[tuple], results: list) -> None:
    """Each evaluated block at its place: ``("overall",)``, ``("sites", site)`` or ``("subgroups",
    column, value)``."""
    for place, result in zip(places, results, strict=True):
        if place == ("overall",):
            report["overall"] = result
        elif place[0] == "sites":
            report["sites"][place[1]] = result
        else:
            report["subgroups"][place[1]][place[2]] = result


def _block(
    *,
    task: str,
    y,
    p,
    settings: MetricSettings,
    clusters,
    strata,
    smooth_intervals: bool,
    logits=None,
    threshold_carry=None,
    names=None,
    scores=None,
) -> dict:
    """One BLOCK (module level, so that worker processes can run it). ``scores``: what the ranking
    metrics rank (the table's logits when given; see :meth:`PredictionsTable.score`). Array arguments
    may come as :class:`_Rows` of the table's arrays; a block whose cluster codes do not repeat is
    bootstrapped case by case."""
    from validate.machine import freed_memory_kept

    with freed_memory_kept():  # its replicates free and allocate arrays of the same sizes over and over
        return _block_of(
            task, y, p, settings, clusters, strata, smooth_intervals, logits, threshold_carry, names, scores
        )


def _block_of(task, y, p, settings, clusters, strata, smooth_intervals, logits, threshold_carry, names, scores) -> dict:
    y, p, logits, scores, strata = (_gathered(v) for v in (y, p, logits, scores, strata))
    clusters = _repeating(_gathered(clusters))
    if task == "binary":
        return binary_block(
            y,
            p,
            settings=settings,
            clusters=clusters,
            strata=strata,
            threshold_carry=threshold_carry,
            logits=logits,
            smooth_intervals=smooth_intervals,
            scores=scores,
        )
    if task == "multiclass":
        return multiclass_block(
            y,
            p,
            settings=settings,
            class_names=names,
            clusters=clusters,
            strata=strata,
            smooth_intervals=smooth_intervals,
            scores=scores,
        )
    return multilabel_block(
        y,
        p,
        settings=settings,
        label_names=names,
        clusters=clusters,
        strata=strata,
        smooth_intervals=smooth_intervals,
        scores=scores,
    )


def site_block(
    table,
    site: str,
    *,
    settings: MetricSettings = MetricSettings(),
    development_site: str | None = None,
    threshold_carry: float | None = None,
    names: Sequence[str] | None = None,
    workers: int | None = None,
) -> dict:
    """The BLOCK of one ``site`` exactly as :func:`metrics_report` computes it under ``sites`` of a run
    over every site: the site's cases alone, bootstrapped without strata, with the target-sensitivity
    threshold found at the site itself when it is ``development_site`` and otherwise
    ``threshold_carry`` (the development site's threshold, from its own site bundle) — so a site bundle
    (:mod:`validate.federation`) holds the numbers a central run would."""
    frame = table.frame
    mask = (frame["site"] == site).to_numpy()
    jobs = _BlockJobs(table, settings, True, threshold_carry, list(names or table.names or []))
    jobs.add(("sites", site), mask, stratified=False, own_threshold=(site == development_site))
    sizes = [len(jobs.jobs[0]["y"])]
    with progress.phase("metrics", total=1, unit="blocks") as ph:
        workers = choose_workers(workers, sizes, settings.n_bootstrap)
        return run_blocks(_block, jobs.jobs, sizes, workers, on_done=block_progress(ph, jobs.places))[0]
