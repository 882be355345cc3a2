"""Runs page: every run in one table (results.load); filter, sort and select runs, then compare
them, clone one's config into the Train form, or delete them after a confirmation.

The table's row selection is kept in st.session_state["selected_runs"] (run ids), which the
Compare page opens with; coming back here re-selects those rows.
"""
from __future__ import annotations

import streamlit as st

from pages import common
from roofseg.store import compare
from roofseg.store import results
from roofseg.store import runs

FILTERS = {"status": "Status", "arch": "Architecture", "encoder": "Encoder", "loss": "Loss"}
# sortable columns -> label; metrics first, val_dice the default
SORTS = {"val_dice": "val Dice", "val_iou": "val IoU", "val_dice_img": "val Dice (per-image mean)",
         "val_precision": "val precision", "val_recall": "val recall", "val_accuracy": "val accuracy",
         "val_loss": "val loss", "minutes": "minutes", "created": "created", "epochs_done": "epochs done"}
COLUMNS = ["run_id", "status", "name", "arch", "encoder", "loss", "folds", "epochs", "epochs_done",
           "val_dice", "val_dice_std", "val_iou", "val_dice_img", "val_precision", "val_recall",
           "minutes", "lr", "batch_size", "optimizer", "schedule", "augment", "in_channels",
           "image_size", "encoder_weights", "seed", "created", "notes", "error"]


def _metric(label: str, help_: str) -> st.column_config.NumberColumn:
    return st.column_config.NumberColumn(label, format="%.3f", help=help_)


COLUMN_CONFIG = {
    "run_id": st.column_config.TextColumn("run", help="run folder name", pinned=True),
    "status": st.column_config.TextColumn("status", help="queued, running, done, failed or cancelled"),
    "val_dice": st.column_config.ProgressColumn(
        "val Dice", format="%.3f", min_value=0.0, max_value=1.0,
        help="Dice over all validation pixels at the best epoch (mean over folds for k-fold)"),
    "val_dice_std": _metric("± std", "std of val Dice over folds (0 for a holdout run)"),
    "val_iou": _metric("val IoU", "IoU over all validation pixels"),
    "val_dice_img": _metric("Dice/img", "mean of per-image Dice on validation"),
    "val_precision": _metric("precision", "validation precision (pixels)"),
    "val_recall": _metric("recall", "validation recall (pixels)"),
    "minutes": st.column_config.NumberColumn("min", format="%.1f", help="training time, minutes"),
    "lr": st.column_config.NumberColumn("lr", format="%.0e"),
    "epochs_done": st.column_config.NumberColumn("epochs done", help="epoch rows written (all folds)"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
}


def runs_page() -> None:
    st.title("Runs")
    rdir = common.runs_dir()
    table, warning = results.load(rdir)
    if warning:
        st.warning(warning)
    if table.empty:
        st.info(f"No runs in {rdir} yet: start one on the Train page.")
        return

    cols = st.columns([1, 1, 1, 1, 1.2, 0.8])
    filters = {c: box.multiselect(label, sorted(table[c].dropna().astype(str).unique()), key=f"runs_f_{c}",
                                  placeholder="all")
               for (c, label), box in zip(FILTERS.items(), cols)}
    sorts = [c for c in SORTS if c in table]
    sort_by = cols[4].selectbox("Sort by", sorts, format_func=SORTS.get, key="runs_sort")
    ascending = cols[5].radio("Order", ["desc", "asc"], horizontal=True, key="runs_order") == "asc"
    view = compare.select_runs(table, filters, sort_by, ascending)
    shown = [c for c in COLUMNS if c in view]
    ids = list(view["run_id"])

    # The key follows the rows shown, so a selection always refers to these rows; a new view
    # starts from the run ids selected before. Selected runs a filter hides stay selected, so
    # one can filter to find a second run to compare with the first.
    previous = [r for r in st.session_state.get("selected_runs", []) if r in set(table["run_id"])]
    event = st.dataframe(
        view[shown], column_config=COLUMN_CONFIG, hide_index=True, width="stretch",
        on_select="rerun", selection_mode="multi-row", key=f"runs_table_{hash(tuple(ids))}",
        selection_default={"selection": {"rows": [i for i, r in enumerate(ids) if r in previous]}})
    hidden = [r for r in previous if r not in ids]
    selected = hidden + [ids[i] for i in event.selection.rows if i < len(ids)]
    st.session_state["selected_runs"] = selected
    st.caption(f"{len(view)} of {len(table)} runs shown · {len(selected)} selected"
               + (f" ({len(hidden)} hidden by the filters)" if hidden else "")
               + (f": {', '.join(selected)}" if selected else " (tick the boxes left of the rows)"))

    a, b, c, d = st.columns(4)
    if a.button("Compare selected", disabled=len(selected) < 2, help="needs two or more runs",
                width="stretch"):
        st.switch_page("pages/compare.py")
    if b.button("Clone config into Train", disabled=len(selected) != 1, help="needs exactly one run",
                width="stretch"):
        st.session_state["train_prefill"] = runs.saved_config(runs.resolve(rdir, selected[0]))
        st.switch_page("pages/train.py")
    if c.button("Delete selected", disabled=not selected, width="stretch"):
        st.session_state["runs_pending_delete"] = selected
    with d:
        common.report_button([runs.resolve(rdir, r) for r in selected], key="runs_report")
    _confirm_delete(rdir)


def _confirm_delete(rdir) -> None:
    """Second step of a deletion: the runs named, a confirm and a cancel button."""
    pending = st.session_state.get("runs_pending_delete")
    for msg in st.session_state.pop("runs_flash", []):
        (st.error if msg.startswith("Not deleted") else st.success)(msg)
    if not pending:
        return
    st.warning(f"Delete {len(pending)} run folder(s) and everything in them (weights, predictions, "
               f"logs)? This cannot be undone: {', '.join(pending)}")
    yes, no = st.columns(2)
    if no.button("Cancel", key="runs_delete_no", width="stretch"):
        st.session_state.pop("runs_pending_delete")
        st.rerun()
    if yes.button(f"Yes, delete {len(pending)} run(s)", type="primary", key="runs_delete_yes",
                  width="stretch"):
        flash, deleted = [], set()
        for run_id in pending:
            try:
                runs.delete_run(runs.resolve(rdir, run_id))
                flash.append(f"Deleted {run_id}")
                deleted.add(run_id)
            except runs.RunError as e:  # still queued/running, or already gone
                flash.append(f"Not deleted: {e}")
        st.session_state.pop("runs_pending_delete")
        st.session_state["runs_flash"] = flash
        st.session_state["selected_runs"] = [r for r in st.session_state.get("selected_runs", [])
                                             if r not in deleted]
        st.rerun()


common.ensure_routed(__file__)
runs_page()
