"""Cases: the most confident errors per site, with image thumbnails for image sites and the attributes.

The ranking is the one ``validate run`` stored in ``cases.json`` (:mod:`validate.analysis.cases`); this
page only filters it (label, threshold, site, how many) and never re-ranks predictions."""

import streamlit as st

from dashboard import case_browser, data, tables, ui

run = ui.current_run()
ui.page_header(
    "Cases",
    run,
    "The cases the model got wrong while being most sure of itself. Looking at them "
    "often shows why a site differs: a different scanner, a label convention, a patient group.",
)

rankings = data.case_rankings(run)
if not rankings:
    ui.missing(
        "cases.json",
        "the run stores the ranked errors there (bundles written before it have none: run the protocol again)",
    )
    st.stop()

stored = int((run.cases or {}).get("per_site") or 1)
task = run.task
label = None
if task == "multilabel":
    label = st.selectbox("Label", list(dict.fromkeys(r.get("label") for r in rankings)), key="cases-label")
thresholds = list(
    dict.fromkeys(float(r["threshold"]) for r in rankings if r.get("label") == label and r.get("threshold") is not None)
)
c1, c2 = st.columns(2)
threshold = None
if thresholds:
    threshold = c1.selectbox(
        "Threshold (a case is called positive when p ≥ threshold)", thresholds, key="cases-threshold"
    )
per_site = c2.slider("Cases per site", 1, max(stored, 2), min(10, stored), key="cases-k")

top, counts = data.confident_errors(run, label=label, threshold=threshold, per_site=per_site)
if counts.empty:
    st.info("cases.json holds no ranking for this choice.")
    st.stop()

roots = data.image_roots(run)
sites = [s for s in run.sites if s in set(counts["site"])] or list(counts["site"])
site = st.selectbox("Site", sites, key="cases-site")
row = counts[counts["site"] == site]
n_cases, n_err = (int(row["cases"].iloc[0]), int(row["errors"].iloc[0])) if len(row) else (0, 0)
shown = top[top["site"] == site].drop(columns=["site"]) if len(top) else top
st.markdown(
    f"**{ui.md(site)}**: {n_err} error(s) among {n_cases} cases; the {len(shown)} most confident are shown. "
    + ("Images come from this site's image folder." if site in roots else "")
)

listed = shown.drop(columns=[c for c in ("thumbnail",) if c in shown.columns])
display = listed.copy()
if len(display):
    display["confidence"] = display["confidence"].map(tables.fmt)
    if "p" in display.columns:
        display["p"] = display["p"].map(tables.fmt)
ui.table(
    display,
    f"confident-errors-{site}",
    csv=listed.assign(site=site),
    run=run,
    caption="Confidence is the probability the model gave to its wrong call. Case identifiers are "
    "pseudonymised unless the protocol keeps them; use the attributes to look for a pattern.",
)

recorded = "image" in shown.columns and shown["image"].notna().any()
if recorded or data.has_thumbnails(run, site):
    st.subheader("Images")
    grid = st.columns(5)
    k = 0
    for _, case in shown.iterrows():
        image = case.get("image") if recorded else None
        name = case.get("thumbnail") if "thumbnail" in shown.columns else None
        png = data.thumbnail(
            run,
            site,
            case["case_id"],
            image if isinstance(image, str) else None,
            name=name if isinstance(name, str) else None,
        )
        if png is None:
            continue
        grid[k % 5].image(
            png,
            output_format="PNG",
            caption=f"{case['case_id']}: true {case['true']}, called {case['called']} ({case['confidence']:.2f})",
        )
        k += 1
    if k == 0:
        st.info("No image of these cases could be read from the bundle or the site's image folder.")
    st.caption(
        "Thumbnails of the cases in the table above, most confident error first. Only images inside the "
        "bundle or the site's image folder named in the protocol are shown."
    )

case_browser.render_errors(run, site, threshold=threshold, label=label)
case_browser.render_failures(run, site)

overview = counts.assign(error_rate=(counts["errors"] / counts["cases"]).round(4))
with st.expander("Errors per site"):
    ui.table(
        overview,
        "errors-per-site",
        run=run,
        caption=f"Errors at threshold {threshold} (multiclass: the most probable class) per site."
        if threshold is not None
        else "Errors of the most probable class per site.",
    )
