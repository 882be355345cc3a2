"""Predict page: apply a finished run's weights to the current dataset's unlabeled images or to
uploaded images; show mask overlays and probability maps, and download the masks (stem.png,
0/255, each at its input's size) or the probability maps as zips.

Predictions are cached per run weights + inputs, so moving the threshold or the opacity only
redraws; k-fold runs average the probabilities of their fold models.
"""
from __future__ import annotations

import streamlit as st

from pages import common
from roofseg import compare, data, overlay, predict, results, runs

SOURCES = ["Unlabeled images of the current dataset", "Upload images"]
MAX_SHOWN = 24  # pictures drawn on the page; the zips always hold every image


@st.cache_data(max_entries=8, show_spinner="Reading the dataset's unlabeled images…")
def _dataset_images(path: str, stamp: tuple):
    return predict.unlabeled_images(path)


@st.cache_data(max_entries=8, show_spinner="Decoding uploads…")
def _uploaded_images(key: tuple, _files: dict[str, bytes]):
    return predict.decode_uploads(_files)


@st.cache_data(max_entries=8, show_spinner="Predicting…")
def _predict(run_dir: str, weights_stamp: tuple, inputs_key: tuple, _images):
    """{stem: (H, W) float32 probability}; keyed on the run's weights and the inputs' identity."""
    return predict.predict_images(run_dir, _images)


def predict_page() -> None:
    st.title("Predict")
    rdir = common.runs_dir()
    table, warning = results.load(rdir)
    if warning:
        st.warning(warning)
    done = compare.select_runs(table, {"status": ["done"]}, "created", ascending=False)
    if done.empty:
        st.info("No finished run yet: train one on the Train page (predictions need its weights).")
        return
    info = {r["run_id"]: r for r in done.to_dict("records")}
    run_id = st.selectbox("Run", list(info), key="predict_run", format_func=lambda r: (
        f"{info[r].get('name') or r} · {info[r]['arch']}/{info[r]['encoder']} · val Dice {info[r]['val_dice']:.3f}"))
    run_dir = runs.resolve(rdir, run_id)

    source = st.radio("Images", SOURCES, horizontal=True, key="predict_source")
    try:
        if source == SOURCES[0]:
            ds = common.current_dataset()
            stamp = (common.mtime_key(ds / "images"), common.mtime_key(ds / "labels"))
            images = _dataset_images(str(ds), stamp)
            key = ("dataset", str(ds), stamp)
            st.caption(f"{len(images)} unlabeled image(s) in {ds} (change the dataset on the Data page)")
        else:
            files = st.file_uploader("Aerial images", type=[e.lstrip(".") for e in data.IMAGE_EXTS],
                                     accept_multiple_files=True, key="predict_uploads")
            key = ("upload", tuple((f.name, f.file_id) for f in files or []))
            images = _uploaded_images(key, {f.name: f.getvalue() for f in files or []})
    except (OSError, ValueError) as e:  # DataError is a ValueError
        common.show_error(e, "Cannot read the images")
        return
    if not images:
        st.info("No images to predict: this dataset has no unlabeled image." if source == SOURCES[0]
                else "Upload one or more images (PNG, JPEG or TIFF).")
        return

    weights = tuple(common.mtime_key(p) for p in runs.checkpoint_paths(run_dir))
    try:
        probs = _predict(str(run_dir), weights, key, images)
    except (OSError, ValueError, RuntimeError) as e:  # missing/damaged weights, odd image shapes
        common.show_error(e, f"Prediction with {run_id} failed")
        return

    cfg = runs.read_json(run_dir / "config.json", {}) or {}
    n_models = len(weights)
    st.caption(f"Predicted by {run_id}" + (f": the mean probability of its {n_models} fold models"
                                           if n_models > 1 else ""))
    a, b = st.columns(2)
    threshold = a.slider("Threshold", 0.01, 0.99, float(cfg.get("threshold", 0.5)), 0.01,
                         key=f"predict_thr_{run_id}", help="probability above which a pixel is roof; "
                                                           "starts at the run's own threshold")
    alpha = b.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="predict_alpha")

    d1, d2 = st.columns(2)
    d1.download_button(f"Download {len(probs)} mask(s) (zip of PNG, 0/255)", predict.zip_masks(probs, threshold),
                       file_name=f"{run_id}_masks.zip", mime="application/zip", on_click="ignore",
                       key="predict_dl_masks", width="stretch")
    d2.download_button("Download probability maps (zip of PNG, 0..255)", predict.zip_probs(probs),
                       file_name=f"{run_id}_probabilities.zip", mime="application/zip", on_click="ignore",
                       key="predict_dl_probs", width="stretch")

    names = list(probs)[:MAX_SHOWN]
    if len(probs) > MAX_SHOWN:
        st.caption(f"Showing the first {MAX_SHOWN} of {len(probs)} images; the zips hold all of them.")
    for name in names:
        img, prob = images[name], probs[name]
        cols = st.columns(3)
        cols[0].image(overlay.to_rgb(img), caption=f"{name} ({img.shape[1]}x{img.shape[0]})", width="stretch")
        cols[1].image(overlay.overlay_mask(img, prob >= threshold, alpha=alpha),  # as in the zip
                      caption=f"predicted roof (p ≥ {threshold:.2f})", width="stretch")
        cols[2].image(overlay.prob_to_rgb(prob), caption="roof probability (dark 0 → yellow 1)",
                      width="stretch")


common.ensure_routed(__file__)
predict_page()
