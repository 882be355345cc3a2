"""Compare page: two or more runs side by side. Learning curves (mean ± std band for k-fold),
final metrics with the best per column highlighted, mean ± std over seeds for runs that differ
only in their seed, the config fields that differ, and every
validation image the runs share: image | ground truth | each run's TP/FP/FN overlay.

Opens with st.session_state["selected_runs"] (set on the Runs page). All numbers and pictures
come from roofseg.store.compare, cached on the run folders' modification times.
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from pages import common
from roofseg.store import compare
from roofseg.data import overlay
from roofseg.store import results

BEST_STYLE = "font-weight: 700; background-color: rgba(0, 158, 115, 0.22)"
SORTS = {"most disagreement": "disagreement", "worst Dice": "worst_dice", "name": "name"}
METRIC_COLUMNS = {"label": "run", "run_id": "run id", "val_dice": "val Dice", "val_dice_std": "± std",
                  "val_iou": "val IoU", "val_iou_std": "± std ", "val_precision": "precision",
                  "val_recall": "recall", "val_accuracy": "accuracy", "val_dice_img": "Dice/img"}


def _stamp(dirs: tuple[str, ...]) -> tuple:
    """Cache key part: changes when any of these runs writes an epoch, a status or its results."""
    files = ("metrics.jsonl", "status.json", "summary.json", "per_image.json", "config.json")
    return tuple(common.mtime_key(f"{d}/{f}") for d in dirs for f in files)


@st.cache_data(max_entries=16)
def _final(dirs, stamp):
    return compare.final_metrics(dirs)


@st.cache_data(max_entries=16)
def _seeds(dirs, stamp):
    return compare.across_seeds(dirs)


@st.cache_data(max_entries=16)
def _diff(dirs, stamp):
    return compare.config_diff(dirs)


@st.cache_data(max_entries=16)
def _metric_names(dirs, stamp):
    return compare.curve_metrics(dirs)


@st.cache_data(max_entries=32)
def _curves(dirs, stamp, metric):
    return compare.curves(dirs, metric)


@st.cache_data(max_entries=16, show_spinner="Comparing predicted masks…")
def _images(dirs, stamp, sort):
    return compare.image_table(dirs, sort)


@st.cache_data(max_entries=64)
def _panels(dirs, stamp, dataset, dataset_stamp, name, alpha):
    return compare.panels(dirs, dataset, name, alpha)


def compare_page() -> None:
    st.title("Compare runs")
    rdir = common.runs_dir()
    table, warning = results.load(rdir)
    if warning:
        st.warning(warning)
    info = {r["run_id"]: r for r in table.to_dict("records")}
    default = [r for r in st.session_state.get("selected_runs", []) if r in info]
    chosen = st.multiselect(
        "Runs to compare", list(info), default=default, key="compare_runs",
        format_func=lambda r: f"{info[r].get('name') or r} · {info[r]['status']}"
                              + (f" · val Dice {info[r]['val_dice']:.3f}" if pd.notna(info[r].get("val_dice")) else ""),
        help="pick two or more; the Runs page's selection opens here")
    if len(chosen) < 2:
        st.info("Pick at least two runs (or select them on the Runs page and press 'Compare selected').")
        return
    dirs = tuple(str(rdir / r) for r in chosen)
    stamp = _stamp(dirs)

    _curves_section(dirs, stamp)
    st.subheader("Final metrics")
    final = _final(dirs, stamp)
    best = compare.best_per_column(final)
    st.dataframe(_styled(final, best), width="stretch", placeholder="—", column_config=METRIC_COLUMNS)
    st.caption("Best epoch per fold; k-fold runs show the mean and the std over folds. Dice, IoU, "
               "precision, recall and accuracy pool every validation pixel; Dice/img is the mean "
               "of per-image Dice. Best value per column highlighted (fewest minutes for time).")
    _seeds_section(dirs, stamp)

    st.subheader("Config differences")
    diff = _diff(dirs, stamp)
    if diff.empty:
        st.info("The configs are identical (differences come from randomness only).")
    else:
        st.dataframe(diff, width="stretch")
        if "data" in diff.index:
            st.warning("These runs trained on different datasets: per-image comparisons below "
                       "only cover image names they share and use the first run's dataset.")

    _images_section(dirs, stamp)


def _seeds_section(dirs, stamp) -> None:
    """Only when two or more of the runs differ in nothing but their seed."""
    seeds = _seeds(dirs, stamp)
    if not (seeds["runs"] >= 2).any():
        return
    st.subheader("Across seeds")
    number = {c: st.column_config.NumberColumn(c.replace("_std", " ± std").replace("_", " "), format="%.4f")
              for c in seeds.columns if c.startswith("val_")}
    st.dataframe(seeds, hide_index=True, width="stretch", column_config=number)
    st.caption("Runs whose configs differ only in their seed (name and notes aside), pooled: mean "
               "and sample std over the seeds of each run's result (a k-fold run counts once, with "
               "its mean over folds). A difference between configurations smaller than these stds "
               "is not yet a finding: add seeds (Train: Seeds) or folds.")


def _curves_section(dirs, stamp) -> None:
    st.subheader("Learning curves")
    names = _metric_names(dirs, stamp)
    if not names:
        st.info("No epochs logged yet.")
        return
    metric = st.selectbox("Metric", names, index=names.index("val_dice") if "val_dice" in names else 0,
                          key="compare_metric")
    df = _curves(dirs, stamp, metric)
    colour = alt.Color("label:N", title="run", scale=alt.Scale(scheme="tableau10"),
                       legend=alt.Legend(orient="bottom", columns=2, labelLimit=400))
    base = alt.Chart(df).encode(x=common.epoch_x("epoch", "epoch", df["epoch"]), color=colour)
    band = (base.transform_filter("isValid(datum.lo) && isFinite(datum.lo)")
            .mark_area(opacity=0.18).encode(y="lo:Q", y2="hi:Q"))
    line = base.mark_line(point=alt.OverlayMarkDef(size=50)).encode(
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip("label:N", title="run"), "epoch:Q",
                 alt.Tooltip("value:Q", title=metric, format=".4f"),
                 alt.Tooltip("std:Q", title="± std over folds", format=".4f"),
                 alt.Tooltip("n_folds:Q", title="folds")])
    st.altair_chart(common.zoomable(band + line), width="stretch")
    st.caption("k-fold runs: the line is the mean over folds, the band ± one std; hover a point for "
               "values. Shift+wheel zooms the epochs, drag pans, double-click resets.")


def _styled(final: pd.DataFrame, best: dict[str, list]):
    def mark(col: pd.Series) -> list[str]:
        return [BEST_STYLE if i in best.get(col.name, []) else "" for i in col.index]
    numbers = {c: "{:.4f}" for c in final.columns if c.startswith("val_")} | {"minutes": "{:.1f}"}
    return final.style.apply(mark).format(numbers, na_rep="—")


def _legend() -> None:
    swatch = '<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb{};' \
             'border-radius:2px;margin:0 0.3em 0 1em;vertical-align:middle"></span>{}'
    st.markdown(" ".join(swatch.format(c, label) for label, c in overlay.legend())
                + swatch.format(overlay.MASK_COLOR, "ground truth"), unsafe_allow_html=True)


def _images_section(dirs, stamp) -> None:
    st.subheader("Validation images")
    c1, c2, c3, c4 = st.columns([1.4, 1, 1, 1])
    sort = SORTS[c1.radio("Order", list(SORTS), horizontal=True, key="compare_sort")]
    per_page = c2.slider("Images per page", 1, 12, 4, key="compare_per_page")
    alpha = c4.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="compare_alpha")
    images = _images(dirs, stamp, sort)
    if images.empty:
        st.info("These runs share no validation image (different datasets or validation splits).")
        return
    n_pages = -(-len(images) // per_page)
    page = c3.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key="compare_page")
    with st.expander(f"Per-image table ({len(images)} images)"):
        st.dataframe(images, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in images.columns if c != "name"})
    _legend()
    dataset = compare.dataset_of(dirs)
    ds_stamp = (common.mtime_key(dataset / "images"), common.mtime_key(dataset / "labels"))
    for row in images.iloc[(page - 1) * per_page: page * per_page].itertuples(index=False):
        try:
            p = _panels(dirs, stamp, str(dataset), ds_stamp, row.name, alpha)
        except (OSError, ValueError) as e:  # DataError is a ValueError: dataset moved or changed
            common.show_error(e, f"Cannot draw {row.name}")
            continue
        split = "?" if pd.isna(row.disagreement) else f"{row.disagreement:.1%}"
        st.markdown(f"**{row.name}** · runs disagree on {split} of pixels · worst Dice {row.worst_dice:.3f}")
        cols = st.columns(2 + len(p["runs"]))
        cols[0].image(p["image"], caption="image", width="stretch")
        if p["ground_truth"] is not None:
            cols[1].image(p["ground_truth"], caption="ground truth", width="stretch")
        else:
            cols[1].info("no label file")
        for col, r in zip(cols[2:], p["runs"]):
            if r["overlay"] is None:
                col.warning(f"{r['label']}: {r['error']}")
            else:
                col.image(r["overlay"], caption=f"{r['label']} · Dice {r['dice']:.3f}", width="stretch")


common.ensure_routed(__file__)
compare_page()
