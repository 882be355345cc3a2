"""Compare page: two or more runs side by side. Learning curves (mean ± std band for k-fold),
final metrics with the best per column highlighted, mean ± std over seeds for runs that differ
only in their seed, "Is the difference real?" (each other recipe against a baseline, paired fold by
fold or image by image: verdict, 95% interval, wins, the test and why, and the images where the
two disagree most), the config fields that differ, and every validation image the runs share:
image | ground truth | each run's TP/FP/FN overlay.

Opens with st.session_state["selected_runs"] (set on the Runs page). All numbers and pictures
come from roofseg.store.compare, cached on a fingerprint of the files it reads (run folders and
the dataset).
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from pages import common
from roofseg.data import dataset as data
from roofseg.data import overlay
from roofseg.store import compare
from roofseg.store import results
from roofseg.store.fingerprint import fingerprint

BEST_STYLE = "font-weight: 700; background-color: rgba(0, 158, 115, 0.22)"
SORTS = {"most disagreement": "disagreement", "worst Dice": "worst_dice", "name": "name"}
METRIC_COLUMNS = {"label": "run", "run_id": "run id", "val_dice": "val Dice", "val_dice_std": "± std",
                  "val_iou": "val IoU", "val_iou_std": "± std ", "val_precision": "precision",
                  "val_recall": "recall", "val_accuracy": "accuracy", "val_dice_img": "Dice/img"}


PAIRED_TOP = 3  # images shown per comparison, where the two sides disagree most


def _stamp(dirs: tuple[str, ...]) -> str:
    """Cache key part: changes when any of these runs writes an epoch, a status, its results or
    its predictions (the files roofseg.store.compare reads)."""
    return fingerprint(*compare.cache_paths(dirs))


def _dataset_stamp(dataset) -> str:
    return fingerprint(*data.cache_paths(dataset))


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


@st.cache_data(max_entries=16, show_spinner="Comparing runs…")
def _paired(dirs, stamp, baseline, epoch):
    return compare.paired_comparisons(dirs, baseline, epoch, PAIRED_TOP)


def _name(info: dict, run_id: str) -> str:
    """A run's name from the results table, or its id (the table has NaN where a run has no name)."""
    name = info.get(run_id, {}).get("name")
    return name if isinstance(name, str) and name else run_id


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
        format_func=lambda r: f"{_name(info, r)} · {info[r]['status']}"
                              + (f" · val Dice {info[r]['val_dice']:.3f}" if pd.notna(info[r].get("val_dice")) else ""),
        help="pick two or more; the Runs page's selection opens here")
    if len(chosen) < 2:
        st.info("Pick at least two runs (or select them on the Runs page and press 'Compare selected').")
        return
    dirs = tuple(str(rdir / r) for r in chosen)
    stamp = _stamp(dirs)
    common.report_button(list(dirs), key="compare_report",
                         label=f"Download report ({len(dirs)} runs, the first as reference)")

    _curves_section(dirs, stamp)
    st.subheader("Final metrics")
    final = _final(dirs, stamp)
    best = compare.best_per_column(final)
    st.dataframe(_styled(final, best), width="stretch", placeholder="—", column_config=METRIC_COLUMNS)
    st.caption("Best epoch per fold; k-fold runs show the mean and the std over folds. Dice, IoU, "
               "precision, recall and accuracy pool every validation pixel; Dice/img is the mean "
               "of per-image Dice. Best value per column highlighted (fewest minutes for time).")
    _seeds_section(dirs, stamp)
    _paired_section(dirs, stamp, chosen, info)

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


def _md(text: str) -> str:
    """Plain text (paths, image names) shown through markdown without turning into emphasis or maths."""
    for ch in "\\`*_$":
        text = text.replace(ch, "\\" + ch)
    return text


def _paired_section(dirs, stamp, ids: list[str], info: dict) -> None:
    """Each other recipe against the baseline (roofseg.store.paired through compare.paired_comparisons)."""
    st.subheader("Is the difference real?")
    st.caption("Runs that differ only in their seed are pooled into one side. Runs trained on the "
               "same folds are compared fold by fold, others image by image on their out-of-fold "
               "per-image Dice; each verdict carries a 95% interval for B − A.")
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    baseline = left.selectbox("Baseline (A)", ids, key="compare_baseline",
                              format_func=lambda r: _name(info, r),
                              help="every other selected run is compared with this one")
    best = right.toggle("Best epoch instead of last", key="compare_paired_best",
                        help="each fold's value at its best epoch, chosen on that same fold: "
                             "optimistic; the last epoch is the honest figure")
    epoch = "best" if best else "last"
    comparisons = _paired(dirs, stamp, dirs[ids.index(baseline)], epoch)
    if not comparisons:
        st.info("Every selected run is a seed of the baseline's recipe: pick a run of another "
                "recipe to compare against it.")
        return
    which = "best epoch of each fold (optimistic)" if best else "last epoch of each fold"
    for c in comparisons:
        with st.container(border=True):
            _comparison(c, which, stamp)


def _comparison(c: dict, which: str, stamp) -> None:
    st.markdown(f"**B:** {_md(c['b_label'])} &nbsp;vs&nbsp; **A:** {_md(c['a_label'])}")
    for line in c["unfinished"]:
        st.warning(_md(line))
    if c["error"]:
        st.error(f"Cannot compare these runs: {_md(c['error'])}")
        return
    rep = c["report"]
    if rep["dice"]["paired"]:
        st.caption(f"Pairing: {_md(rep['dice']['pairing'])}")
        for key in ("dice", "iou"):
            r = rep[key]
            st.markdown(f"**{r['label']}**, {which}: {_md(r['verdict'])}")
            st.caption(f"Test: {_md(r['test_why'])}")
    else:  # the reason, said once for Dice and IoU
        st.info(f"Dice and IoU are not compared fold by fold: {_md(rep['dice']['pairing'])}")
    im = rep["images"]
    st.markdown(f"**{im['label']} per image** (out of fold): {_md(im['verdict'])}")
    if im["paired"]:
        st.caption(f"Test: {_md(im['test_why'])}")
    if len(c["table"]):
        st.dataframe(c["table"], hide_index=True, width="stretch", column_config={
            k: st.column_config.NumberColumn(k, format="%.4f")
            for k in ("mean A", "mean B", "B − A", "95% low", "95% high")} | {
            "p": st.column_config.NumberColumn("p", format="%.3g")})
    notes = list(dict.fromkeys(n for k in ("dice", "iou", "images") for n in rep[k]["notes"]))
    if notes:
        st.caption("Notes: " + " · ".join(_md(n) for n in notes))
    if im["disagree"]:
        _disagreement(c, im["disagree"], stamp)


def _disagreement(c: dict, disagree: list[dict], stamp) -> None:
    """The images where A and B disagree most, drawn like the validation images below."""
    dirs = tuple(c["dirs"])
    dataset = compare.dataset_of(dirs)
    ds_stamp = _dataset_stamp(dataset)
    alpha = st.session_state.get("compare_alpha", 0.5)  # the opacity set under Validation images
    side = {r: "A" for r in c["a"]} | {r: "B" for r in c["b"]}
    with st.expander(f"Where they disagree most: {len(disagree)} image(s)", expanded=True):
        for d in disagree:
            _disagreeing_image(dirs, stamp, str(dataset), ds_stamp, d, alpha, side)


def _disagreeing_image(dirs, stamp, dataset, ds_stamp, d: dict, alpha, side: dict) -> None:
    try:
        p = _panels(dirs, stamp, dataset, ds_stamp, d["name"], alpha)
    except (OSError, ValueError) as e:  # DataError is a ValueError: dataset moved or changed
        common.show_error(e, f"Cannot draw {d['name']}")
        return
    st.markdown(f"**{_md(d['name'])}** · per-image Dice A {d['a']:.3f} · B {d['b']:.3f} · "
                f"B − A {d['diff']:+.3f}")
    _panel_row(p, side)


def _panel_row(p: dict, side: dict | None = None) -> None:
    """image | ground truth | each run's TP/FP/FN overlay; `side` (run id -> "A"/"B") prefixes captions."""
    cols = st.columns(2 + len(p["runs"]))
    cols[0].image(p["image"], caption="image", width="stretch")
    if p["ground_truth"] is not None:
        cols[1].image(p["ground_truth"], caption="ground truth", width="stretch")
    else:
        cols[1].info("no label file")
    for col, r in zip(cols[2:], p["runs"]):
        tag = f"{side[r['run_id']]} · " if side and r["run_id"] in side else ""
        if r["overlay"] is None:
            col.warning(f"{tag}{r['label']}: {r['error']}")
        else:
            col.image(r["overlay"], caption=f"{tag}{r['label']} · Dice {r['dice']:.3f}", width="stretch")


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
    ds_stamp = _dataset_stamp(dataset)
    for row in images.iloc[(page - 1) * per_page: page * per_page].itertuples(index=False):
        try:
            p = _panels(dirs, stamp, str(dataset), ds_stamp, row.name, alpha)
        except (OSError, ValueError) as e:  # DataError is a ValueError: dataset moved or changed
            common.show_error(e, f"Cannot draw {row.name}")
            continue
        split = "?" if pd.isna(row.disagreement) else f"{row.disagreement:.1%}"
        st.markdown(f"**{row.name}** · runs disagree on {split} of pixels · worst Dice {row.worst_dice:.3f}")
        _panel_row(p)


common.ensure_routed(__file__)
compare_page()
