"""The Metrics JSON (DESIGN.md) of a predictions table: pooled, per site, per subgroup value."""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from validate.metrics.blocks import binary_block, multiclass_block, multilabel_block
from validate.metrics.operating import threshold_for_sensitivity
from validate.metrics.settings import MetricSettings

MISSING_VALUE = "missing"


def _clusters(frame: pd.DataFrame, settings: MetricSettings) -> Optional[np.ndarray]:
    """Cluster ids for the bootstrap: the ``cluster_by`` column when some value repeats, else None."""
    col = settings.cluster_by
    if not col or col not in frame:
        return None
    v = frame[col].astype(str).to_numpy(dtype=object)
    return v if pd.Series(v).duplicated().any() else None


def metrics_report(table, *, task: Optional[str] = None, settings: MetricSettings = MetricSettings(),
                   class_names: Optional[Sequence[str]] = None, label_names: Optional[Sequence[str]] = None,
                   subgroup_columns: Sequence[str] = (), subgroups: Optional[pd.DataFrame] = None,
                   development_site: Optional[str] = None, smooth_intervals: bool = True) -> dict:
    """The whole Metrics JSON from a predictions table.

    ``table``: a :class:`validate.predictions.PredictionsTable` or a predictions DataFrame.
    ``overall`` pools every site, its bootstrap stratified by site; ``sites`` has one BLOCK per site;
    ``subgroups`` one BLOCK per value of each column in ``subgroup_columns`` (looked up in
    ``subgroups`` — e.g. :func:`validate.cohort.derive_subgroups` output, row-aligned with the table —
    then in the table's attributes; missing values form the group ``"missing"``), stratified by site.
    The bootstrap resamples ``settings.cluster_by`` (patient) clusters when a value repeats.
    ``development_site``: where the threshold for ``settings.target_sensitivity`` is found (binary);
    it is then carried unchanged to every other block. Without it each block finds its own.
    """
    from validate.predictions import PredictionsTable, table_from_frame

    if not isinstance(table, PredictionsTable):
        table = table_from_frame(table, task=task, class_names=class_names, label_names=label_names)
    task = task or table.task
    if task != table.task:
        raise ValueError(f"table holds a {table.task} task, not {task}")
    frame = table.frame
    names = list(class_names or label_names or table.names or [])

    carry = None
    if task == "binary" and development_site is not None and settings.target_sensitivity is not None:
        dev = (frame["site"] == development_site).to_numpy()
        if dev.any():
            t = threshold_for_sensitivity(table.y()[dev], table.prob()[dev], settings.target_sensitivity)
            carry = t if np.isfinite(t) else None

    def block(mask: np.ndarray, stratified: bool, own_threshold: bool = False) -> dict:
        sub = frame.loc[mask]
        strata = sub["site"].to_numpy(dtype=object) if stratified else None
        clusters = _clusters(sub, settings)
        if task == "binary":
            return binary_block(table.y()[mask], table.prob()[mask], settings=settings, clusters=clusters,
                                strata=strata, threshold_carry=None if own_threshold else carry,
                                logits=table.logit()[mask], smooth_intervals=smooth_intervals)
        if task == "multiclass":
            return multiclass_block(table.y()[mask], table.probs()[mask], settings=settings,
                                    class_names=names or None, clusters=clusters, strata=strata,
                                    smooth_intervals=smooth_intervals)
        return multilabel_block(table.Y()[mask], table.probs()[mask], settings=settings,
                                label_names=names or None, clusters=clusters, strata=strata,
                                smooth_intervals=smooth_intervals)

    everyone = np.ones(len(frame), dtype=bool)
    site_ids = frame["site"].to_numpy(dtype=object)
    report = {"task": task, "n_bootstrap": settings.n_bootstrap, "ci_level": settings.ci_level,
              "seed": settings.seed, "overall": block(everyone, stratified=True), "sites": {}, "subgroups": {}}
    sites = table.sites()
    for site in sites:
        if len(sites) == 1 and carry is None:
            # one site: its block is the pooled block (same cases, a single stratum)
            report["sites"][site] = copy.deepcopy(report["overall"])
            continue
        report["sites"][site] = block(site_ids == site, stratified=False, own_threshold=(site == development_site))
    for col in subgroup_columns:
        if subgroups is not None and col in subgroups:
            values = subgroups[col].reset_index(drop=True)
        elif col in frame:
            values = frame[col]
        else:
            raise ValueError(f"subgroup column {col!r} is neither derived nor a table attribute")
        labels = values.map(lambda v: MISSING_VALUE if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        labels = labels.to_numpy(dtype=object)
        report["subgroups"][col] = {v: block(labels == v, stratified=True) for v in sorted(set(labels))}
    return report
