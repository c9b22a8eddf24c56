"""Cases: the most confident errors per site, with image thumbnails for image sites and the attributes."""
import streamlit as st

from dashboard import data, tables, ui

run = ui.current_run()
ui.page_header("Cases", run, "The cases the model got wrong while being most sure of itself. Looking at them "
               "often shows why a site differs: a different scanner, a label convention, a patient group.")

if not run.has_predictions:
    ui.missing("predictions.parquet", "the case-level predictions are needed to list cases")
    st.stop()


protocol = run.protocol
task = run.task
label = None
if task == "multilabel":
    label = st.selectbox("Label", list(protocol.get("labels") or []), key="cases-label")
thresholds = [float(t) for t in ((protocol.get("metrics") or {}).get("thresholds") or [0.5])]
c1, c2 = st.columns(2)
threshold = 0.5
if task != "multiclass":
    threshold = c1.selectbox("Threshold (a case is called positive when p ≥ threshold)", thresholds,
                             key="cases-threshold")
per_site = c2.slider("Cases per site", 1, 50, 10, key="cases-k")

top, counts = data.confident_errors(run, label=label, threshold=threshold, per_site=per_site)
if top.empty and counts.empty:
    st.info("The predictions hold no scores this page can read (expected `p`/`logit` or per-class columns).")
    st.stop()

roots = data.image_roots(run)
sites = [s for s in run.sites if s in set(counts["site"])] or list(counts["site"])
site = st.selectbox("Site", sites, key="cases-site")
row = counts[counts["site"] == site]
n_cases, n_err = (int(row["cases"].iloc[0]), int(row["errors"].iloc[0])) if len(row) else (0, 0)
shown = top[top["site"] == site].drop(columns=["site"])
st.markdown(f"**{ui.md(site)}**: {n_err} error(s) among {n_cases} cases; the {len(shown)} most confident are shown. "
            + ("Images come from this site's image folder." if site in roots else ""))

display = shown.copy()
display["confidence"] = display["confidence"].map(tables.fmt)
if "p" in display.columns:
    display["p"] = display["p"].map(tables.fmt)
ui.table(display, f"confident-errors-{site}", csv=shown.assign(site=site), run=run,
         caption="Confidence is the probability the model gave to its wrong call. Case identifiers are "
                 "pseudonymised unless the protocol keeps them; use the attributes to look for a pattern.")

recorded = "image" in shown.columns and shown["image"].notna().any()
if recorded or data.has_thumbnails(run, site):
    st.subheader("Images")
    grid = st.columns(5)
    k = 0
    for _, case in shown.iterrows():
        png = data.thumbnail(run, site, case["case_id"], case.get("image") if recorded else None)
        if png is None:
            continue
        grid[k % 5].image(png, output_format="PNG", caption=f"{case['case_id']}: true {case['true']}, called {case['called']} "
                                       f"({case['confidence']:.2f})")
        k += 1
    if k == 0:
        st.info("No image of these cases could be read from the bundle or the site's image folder.")
    st.caption("Thumbnails of the cases in the table above, most confident error first. Only images inside the "
               "bundle or the site's image folder named in the protocol are shown.")

overview = counts.assign(error_rate=(counts["errors"] / counts["cases"]).round(4))
with st.expander("Errors per site"):
    ui.table(overview, "errors-per-site", run=run,
             caption=f"Errors at threshold {threshold} (multiclass: the most probable class) per site.")
