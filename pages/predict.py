"""Predict page: apply a finished run's weights to the current dataset's unlabeled images or to
uploaded images; show mask overlays and probability maps, and download the masks (stem.png,
0/255, each at its input's size) or the probability maps as zips.

Images the run already predicted (its dataset's unlabeled images, matched by content) are read from
its folder without loading a model; only new inputs are computed. Predictions are cached per run
weights + inputs + TTA, so moving the threshold or the opacity only redraws; k-fold runs average
the probabilities of their fold models. The threshold starts at the one the run tuned on its
out-of-fold predictions (k-fold runs), else at the run's configured threshold.
"""
from __future__ import annotations

import streamlit as st

from pages import common
from roofseg.store import compare
from roofseg.data import dataset as data
from roofseg.data import overlay
from roofseg.engine import predict
from roofseg.store import results
from roofseg.store import runs
from roofseg.store.fingerprint import fingerprint

SOURCES = ["Unlabeled images of the current dataset", "Upload images"]
MAX_SHOWN = 24  # pictures drawn on the page; the zips always hold every image


@st.cache_data(max_entries=8, show_spinner="Reading the dataset's unlabeled images…")
def _dataset_images(path: str, stamp: str):
    return predict.unlabeled_images(path)


@st.cache_data(max_entries=8, show_spinner="Decoding uploads…")
def _uploaded_images(key: tuple, _files: dict[str, bytes]):
    return predict.decode_uploads(_files)


@st.cache_data(max_entries=8, show_spinner="Predicting…")
def _predict(run_dir: str, weights_stamp: str, inputs_key: tuple, tta: bool, _images):
    """({stem: (H, W) float32 probability}, stems reused from the run folder); keyed on the run's
    weights, the inputs' identity and TTA."""
    return predict.predict_or_reuse(run_dir, _images, tta=tta)


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
            stamp = fingerprint(ds / "images", ds / "labels")
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

    cfg = runs.read_json(run_dir / "config.json", {}) or {}
    summary = runs.read_json(run_dir / "summary.json", {}) or {}
    tta = st.checkbox("Test-time augmentation (average of the 8 flips and rotations; 8x slower)",
                      value=bool(cfg.get("tta", False)), key=f"predict_tta_{run_id}",
                      help="Aerial roofs have no 'up', so every flip or rotation is an equally valid "
                           "view; averaging them smooths the probability map.")
    ckpts = runs.checkpoint_paths(run_dir)
    weights = fingerprint(*ckpts, run_dir / predict.SAVED_INPUTS, run_dir / predict.SAVED_PROBS)
    try:
        probs, reused = _predict(str(run_dir), weights, key, tta, images)
    except (OSError, ValueError, RuntimeError) as e:  # missing/damaged weights, odd image shapes
        common.show_error(e, f"Prediction with {run_id} failed")
        return

    n_models = len(ckpts)
    st.caption(f"Predicted by {run_id}" + (f": the mean probability of its {n_models} fold models"
                                           if n_models > 1 else "") + (" with TTA" if tta else "")
               + (f" · {len(reused)} of {len(probs)} read from the run folder (no model loaded for them)"
                  if reused else ""))
    tuned = summary.get("threshold_oof")
    start_thr = float(tuned if tuned is not None else cfg.get("threshold", 0.5))
    a, b = st.columns(2)
    threshold = a.slider("Threshold", 0.01, 0.99, min(max(start_thr, 0.01), 0.99), 0.01,
                         key=f"predict_thr_{run_id}",
                         help="probability above which a pixel is roof; starts at "
                              + (f"{tuned:.3f}, tuned on this run's out-of-fold predictions"
                                 if tuned is not None else "the run's own threshold"))
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
