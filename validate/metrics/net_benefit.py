"""Net benefit and decision curves (Vickers & Elkin, Med Decis Making 2006;26:565–74; Vickers, van
Calster & Steyerberg, BMJ 2016;352:i6 and Diagn Progn Res 2019;3:18).

A patient is treated when the model's probability reaches the decision threshold, ``p >= t`` (as
Python/R ``dcurves``). The threshold t is the risk at which a clinician is indifferent between treating
and not: its odds t/(1−t) weigh one false positive against one true positive. Every quantity here is
a function of four (weighted) sums of a set of cases — treated events TP, treated non-events FP, events
and cases — so that the point estimate (unit weights) and every bootstrap replicate (count weights)
use the same definitions:

- net benefit NB(t) = TP/n − FP/n · t/(1−t);
- treat all NB_all(t) = π − (1 − π) · t/(1−t), π = events/n the prevalence (treat none: 0);
- net benefit vs treat all: NB − NB_all (paired: the same replicate for both);
- net interventions avoided per 100 patients: (NB − NB_all) / (t/(1−t)) · 100 (Vickers et al. 2008,
  BMC Med Inform Decis Mak 8:53);
- standardised net benefit sNB = NB / π (Kerr et al. 2016; undefined without events).

Net benefit is at the prevalence of the cases it is computed on: a site's NB is what that site would
get; a pooled block mixes the sites' prevalences. Per Vickers et al. (Diagn Progn Res 2023;7:1), no
"significance" of net benefit is reported: the share of bootstrap replicates in which the model beats
both defaults (:func:`beats_defaults`) is a descriptive share, not a p-value.
"""

from __future__ import annotations

import numpy as np


def threshold_odds(t) -> np.ndarray:
    """t / (1 − t): the harm of a false positive relative to the benefit of a true positive at t."""
    t = np.asarray(t, dtype=np.float64)
    return t / (1.0 - t)


def net_benefit(tp, fp, n, t) -> np.ndarray:
    """NB(t) = TP/n − FP/n · t/(1−t) (Vickers & Elkin 2006)."""
    tp, fp, n = (np.asarray(x, dtype=np.float64) for x in (tp, fp, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / n - fp / n * threshold_odds(t)


def treat_all(events, n, t) -> np.ndarray:
    """NB_all(t) = π − (1 − π) · t/(1−t), π = events / n: the net benefit of treating everyone."""
    events, n = (np.asarray(x, dtype=np.float64) for x in (events, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = events / n
        return prevalence - (1.0 - prevalence) * threshold_odds(t)


def interventions_avoided(nb, nb_all, t) -> np.ndarray:
    """Net interventions avoided per 100 patients, (NB − NB_all) / (t/(1−t)) · 100: how many fewer
    treatments than treating everyone, at no loss of true positives (Vickers et al. 2008)."""
    nb, nb_all = np.asarray(nb, dtype=np.float64), np.asarray(nb_all, dtype=np.float64)
    return (nb - nb_all) / threshold_odds(t) * 100.0


def standardized_net_benefit(nb, events, n) -> np.ndarray:
    """sNB = NB / π (Kerr et al., Med Decis Making 2016;36:80): net benefit as a share of the most
    attainable (treating exactly the events); NaN without events."""
    nb, events, n = (np.asarray(x, dtype=np.float64) for x in (nb, events, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(events > 0, nb / np.where(events > 0, events / n, 1.0), np.nan)


def beats_defaults(nb_replicates, all_replicates) -> float | None:
    """The share of bootstrap replicates in which NB > max(0, NB_all): the model beats both treating
    everyone and treating no one in that replicate. Not a p-value (Vickers et al. 2023). None without
    finite replicates."""
    nb = np.asarray(nb_replicates, dtype=np.float64)
    ref = np.asarray(all_replicates, dtype=np.float64)
    ok = np.isfinite(nb) & np.isfinite(ref)
    if not ok.any():
        return None
    return float(np.mean(nb[ok] > np.maximum(0.0, ref[ok])))


def decision_sums(y, p, thresholds, ws=None) -> dict[str, np.ndarray]:
    """The sums net benefit needs for weights ``ws`` (k, n) (default unit weights, k = 1) over cases
    ``y`` (0/1) and ``p``, at each threshold: ``{"n": (k,), "events": (k,), "tp": (k, T), "fp": (k, T)}``
    with treated = ``p >= t``. With count weights every sum is an exact integer."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ws = np.ones((1, y.size)) if ws is None else np.asarray(ws, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    treated = (p[:, None] >= t[None, :]).astype(np.float64)  # (n, T)
    called = ws @ treated
    tp = ws @ (treated * y[:, None])
    return {"n": ws.sum(axis=1), "events": ws @ y, "tp": tp, "fp": called - tp}
