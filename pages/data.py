"""Data page: choose the dataset (built-in demo, a folder, an uploaded zip, the DIDA download),
read data.check_dataset's report on it, browse its images with the roof masks overlaid, and review
its labels against a finished k-fold run's out-of-fold predictions (store.review, issue #13).

A successful choice goes into st.session_state["dataset"], which the Train page trains on; a
failed one shows why and leaves the previous choice in place.
"""
from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from pages import common
from roofseg.data import dataset as data
from roofseg.data import fetch
from roofseg.data import overlay
from roofseg.store import review
from roofseg.store import runs
from roofseg.store.fingerprint import fingerprint

THUMB = 256        # gallery pictures are shrunk to at most this many pixels a side
MAX_GALLERY = 60   # beyond this the page gets slow to send; the report still counts every file


def _key(path: Path) -> str:
    """Cache key part: changes when any image or label is added, removed or rewritten."""
    return fingerprint(*data.cache_paths(path))


@st.cache_data(show_spinner="Checking the dataset…", max_entries=16)
def _report(path: str, key: str) -> data.DataReport:
    return data.check_dataset(path)


@st.cache_data(show_spinner="Loading images…", max_entries=8)
def _gallery(path: str, key: str, alpha: float, flagged: tuple) -> list:
    return data.gallery(path, MAX_GALLERY, THUMB, alpha, flagged)


def _folder_name(text: str) -> str:
    """A single folder name from free text: no separators, no leading dots ('My roofs' -> 'My-roofs')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")


def _use(path: Path) -> None:
    """Make path the current dataset if it holds one; otherwise say why."""
    try:
        _report(str(path), _key(path))
    except data.DataError as e:
        st.error(str(e))
        return
    st.session_state["dataset"] = str(path)
    st.rerun()  # from the top: the "In use" line and the tabs' opening follow the new dataset


SOURCES = ["Built-in demo", "Folder", "Upload a zip", "Download DIDA"]  # the tabs, in order


def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def source_of(path: Path) -> str:
    """The tab a dataset folder belongs to, from where it lies (uploads and DIDA go under the data
    root, the demo into its demo/): anything else, ROOFSEG_DATA included, is a folder."""
    p, root = _resolved(path), _resolved(common.data_root())
    if p == _resolved(common.demo_dir()):
        return "Built-in demo"
    if p.is_relative_to(root / "uploads"):
        return "Upload a zip"
    if p.is_relative_to(root / "dida"):
        return "Download DIDA"
    return "Folder"


def describe(path: Path) -> str:
    """One line naming the current dataset and where it came from."""
    return {"Built-in demo": "the built-in demo in `{}`",
            "Folder": "the folder `{}`",
            "Upload a zip": "an uploaded zip, unpacked in `{}`",
            "Download DIDA": "DIDA, downloaded into `{}`"}[source_of(path)].format(path)


def choose_dataset(current: Path) -> None:
    """The four ways to get a dataset; each ends in _use() with a folder.

    The tabs open on the current dataset's source: opening on the demo's tab and its button while a
    folder was in use read as "the demo is loaded" (issue #14).
    """
    demo, folder, upload, dida = st.tabs(SOURCES, default=source_of(current))
    with demo:
        st.caption("Synthetic aerial scenes laid out like DIDA (images/ RGBA, labels/ roof masks), "
                   "with a few unlabeled images as the prediction set.")
        if st.button("Use the built-in demo", key="use_demo"):
            # the demo itself (generated on first use), even where ROOFSEG_DATA names another default
            try:
                with st.spinner("Preparing the demo…"):
                    demo_path = common.demo_dataset()
            except OSError as e:  # a read-only data root, or a foreign folder where the demo goes
                common.show_error(e, "Cannot prepare the demo")
            else:
                _use(demo_path)
    with folder:
        typed = st.text_input("Dataset folder", key="data_folder", placeholder="/path/to/dida",
                              help="A folder with images/ and labels/; a label belongs to the "
                                   "image with the same file name.")
        if st.button("Use this folder", key="use_folder", disabled=not typed.strip()):
            _use(Path(typed.strip()).expanduser().resolve())
    with upload:
        zf = st.file_uploader("Zip holding images/ and labels/ (at any depth)", type="zip", key="data_zip")
        default = _folder_name(Path(zf.name).stem) if zf else ""
        name = st.text_input("Save as folder", key="data_zip_name", placeholder=default or "my-roofs",
                             help=f"Unpacked into {common.data_root() / 'uploads'}/<name>; "
                                  "an existing folder is never overwritten.")
        name = _folder_name(name) or default or "upload"
        if st.button("Unpack and use", key="unpack_zip", disabled=zf is None):
            try:
                with st.spinner("Unpacking…"):
                    _use(fetch.extract_dataset_zip(zf, common.data_root() / "uploads" / name))
            except fetch.FetchError as e:
                st.error(str(e))
    with dida:
        dest = common.data_root() / "dida"
        st.caption(f"Downloads the DIDA roof task ({fetch.DIDA_URL}) into {dest}; "
                   "a copy already there is used as it is.")
        if st.button("Download DIDA", key="fetch_dida"):
            try:
                with st.spinner("Downloading…"):
                    _use(fetch.fetch_dida(dest))
            except fetch.FetchError as e:
                st.error(str(e))


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in counts.items()) or "–"


def show_report(path: Path) -> data.DataReport | None:
    """Counts as metrics, sizes and modes in a line, every finding in a table."""
    try:
        rep = _report(str(path), _key(path))
    except data.DataError as e:
        st.error(str(e))
        return None
    cols = st.columns(6)
    cols[0].metric("Images", rep.n_images)
    cols[1].metric("Labels", rep.n_labels)
    cols[2].metric("Pairs", rep.n_pairs)
    cols[3].metric("Unlabeled", len(rep.unlabeled), help="images without a label: the prediction set")
    cols[4].metric("Flagged", len(rep.flagged), help="pairs left out of training by default")
    cols[5].metric("Roof fraction", f"{rep.roof_fraction:.1%}", help="mean share of roof pixels")
    st.caption(f"Image sizes: {_tally(rep.sizes)} · image modes: {_tally(rep.modes)} · "
               f"label modes: {_tally(rep.label_modes)}")
    if rep.unreadable:
        st.error(f"{len(rep.unreadable)} file(s) cannot be read and are left out: "
                 + "; ".join(f"{Path(f).name} ({why})" for f, why in rep.unreadable.items()))
    if not rep.n_pairs:
        st.info("No labelled pairs: prediction-only data. The Predict page can use it; training "
                "needs images with labels (labels/<same name>).")
    findings = ([(s, f"flagged: {why}") for s, why in rep.flagged.items()]
                + [(f, f"unreadable: {why}") for f, why in rep.unreadable.items()]
                + [(f, "label without an image") for f in rep.orphan_labels]
                + [(s, f"warning (kept): {why}") for s, why in rep.warnings.items()])
    if findings:
        import pandas as pd  # here, not at the top: this page is the first drawn, and most datasets have no findings
        st.warning(f"{len(findings)} finding(s); flagged pairs are left out of training "
                   "unless the run's exclude_flagged is off; warned ones are trained on.")
        st.dataframe(pd.DataFrame(findings, columns=["image or file", "finding"]), hide_index=True)
    else:
        st.success("No problems found.")
    with st.expander("Report as text"):
        st.code("\n".join(rep.lines()), language=None)
    return rep


def show_gallery(path: Path, rep: data.DataReport) -> None:
    alpha = st.slider("Mask opacity", 0.0, 1.0, 0.45, 0.05, key="data_alpha")
    try:
        items = _gallery(str(path), _key(path), alpha, tuple(sorted(rep.flagged)))
    except data.DataError as e:  # the folder changed between the report and now
        st.error(str(e))
        return
    if len(items) < rep.n_images:
        st.caption(f"Showing {len(items)} of {rep.n_images} images.")
    if items:
        st.image([pic for _, pic, _ in items], caption=[c for _, _, c in items], width=180)


REVIEW_COLUMNS = {"rank": "rank", "flag": "flagged", "name": "image", "score": "score", "reason": "reason",
                  "fold": "fold", "dice": "Dice"}
REVIEW_PICTURES = 12  # flagged images drawn at most; the table lists them all


@st.cache_data(max_entries=8)
def _reviewable(runs_dir: str, key: str, dataset: str) -> list[dict]:
    return review.reviewable_runs(runs_dir, dataset)


@st.cache_data(show_spinner="Reviewing the labels…", max_entries=8)
def _review(run_dir: str, key: str, dataset: str) -> dict:
    return review.review(run_dir, dataset)


@st.cache_data(max_entries=64)
def _review_picture(run_dir: str, key: str, name: str, thresholds: tuple, alpha: float):
    return review.review_picture(run_dir, name, dict(thresholds), alpha)


def _swatches(items) -> str:
    swatch = '<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb{};' \
             'border-radius:2px;margin:0 0.3em 0 1em;vertical-align:middle"></span>{}'
    return " ".join(swatch.format(c, label) for label, c in items)


def show_review(path: Path) -> None:
    """Labels to review: pick a finished k-fold run on this dataset; its ranking, and per flagged
    image the picture and the reason."""
    st.subheader("Labels to review")
    st.caption("A k-fold run predicts every labelled image with a model that never saw it. Where that "
               "prediction confidently disagrees with the label, the label may be wrong: worst first.")
    rdir = common.runs_dir()
    found = _reviewable(str(rdir), fingerprint(rdir), str(path))
    if not found:
        st.info("No finished k-fold run on this dataset yet. Train one on the Train page with k-fold "
                "validation (5 folds, say), then its labels can be reviewed here.")
        return
    labels = {r["run_id"]: r["label"] for r in found}
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="review_run")
    run_dir = rdir / run_id
    key = fingerprint(*review.cache_paths(run_dir), *data.cache_paths(path))
    try:
        rev = _review(str(run_dir), key, str(path))
    except (review.ReviewError, OSError) as e:  # the run or the dataset changed since it was listed
        st.error(str(e))
        return
    flagged = [r for r in rev["images"] if r["flagged"]]
    st.markdown(f"**{len(flagged)}** of {len(rev['images'])} labels flagged. {rev['rule'][0].upper() + rev['rule'][1:]}.")
    import pandas as pd  # (see show_report)
    table = pd.DataFrame(rev["images"]).assign(flag=lambda df: df["flagged"].map({True: "⚑", False: ""}))
    st.dataframe(table[list(REVIEW_COLUMNS)].rename(columns=REVIEW_COLUMNS), hide_index=True,
                 column_config={"score": st.column_config.NumberColumn(
                     format="%.3f", help="1 = label and out-of-fold prediction agree; 0 = nothing agrees"),
                     "Dice": st.column_config.NumberColumn(format="%.3f")})
    if rev["not_reviewed"]:
        st.caption("Not reviewed: " + "; ".join(f"{n} ({why})" for n, why in rev["not_reviewed"].items()))
    if not flagged:
        st.success("No label stands out from the rest.")
        return
    names = [r["name"] for r in flagged]
    if st.button(f"Train without these {len(names)} label(s)", key="review_exclude",
                 help="Opens Train with the run's recipe and these images left out (config field "
                      "`exclude`, recorded in the new run's config and summary). Your files are not touched."):
        cfg = runs.saved_config(run_dir)
        st.session_state["train_prefill"] = {**cfg, "exclude": ",".join(names), "name": "", "seed": cfg.get("seed", 0)}
        st.switch_page("pages/train.py")
    st.markdown(_swatches(overlay.review_legend()), unsafe_allow_html=True)
    alpha = st.slider("Disagreement opacity", 0.0, 1.0, 0.6, 0.05, key="review_alpha")
    cols = st.columns(3)
    for i, r in enumerate(flagged[:REVIEW_PICTURES]):
        with cols[i % 3]:
            try:
                pic = _review_picture(str(run_dir), key, r["name"], tuple(sorted(rev["thresholds"].items())), alpha)
            except (review.ReviewError, OSError) as e:
                st.error(str(e))
                continue
            st.image(pic, caption=f"{r['name']} · score {r['score']:.3f} · {r['reason']}", width="stretch")
    if len(flagged) > REVIEW_PICTURES:
        st.caption(f"Showing the {REVIEW_PICTURES} worst of {len(flagged)} flagged labels.")


def main() -> None:
    st.title("Data")
    path = common.current_dataset()
    st.info(f"**In use:** {describe(path)}", icon=":material/folder_open:")
    choose_dataset(path)
    st.subheader(f"Current dataset: `{path}`")
    rep = show_report(path)
    if rep is not None:
        st.subheader("Images, roof masks overlaid")
        show_gallery(path, rep)
        show_review(path)


common.ensure_routed(__file__)
main()
