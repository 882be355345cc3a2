"""Train page: a sidebar form builds a RunConfig; Start checks it (train.preflight) and launches a
worker process (exec.control.launch), then returns at once.

The main area is read back from the runs folder on every load, so a browser reload never loses or
duplicates a run: queued and running runs with a progress bar, live curves and Cancel (a fragment
re-reads their folders every second), then the last few finished runs with their final metrics.
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from pages import common
from roofseg import config
from roofseg.store import progress
from roofseg.store import results
from roofseg.store import runs
from roofseg.exec import control
from roofseg.engine import train
from roofseg.config import RunConfig

FORM = "train_form"     # session key: the form's last values as a full config dict (kept across pages)
LIVE = "train_live"     # session key: ids of the active runs the live view showed last
STARTS = "train_starts"  # session key: launches so far; part of the Start button's key (see main)
FLASH = "train_flash"    # session key: the message of the last launch, shown once after the rerun
N_RECENT = 5
SIMPLE = ["arch", "in_channels", "loss", "optimizer", "lr", "schedule", "batch_size", "epochs",
          "augment", "val_fraction", "seed", "name", "notes", "encoder_lr_mult", "freeze_encoder_epochs",
          "freeze_bn", "keep", "tta"]  # widgets that hold a field as it is
HELP = config.field_help()
CHOICE_FIELDS = ["arch", "encoder", "in_channels", "loss", "optimizer", "schedule", "augment"]


def _seed_widgets(cfg: dict, overwrite: bool) -> None:
    """Put a config's values into the widgets' session keys: all of them for a Runs-page clone,
    else only the missing ones (Streamlit drops a widget's key while it is not shown)."""
    w, k = cfg["encoder_weights"], cfg["folds"]
    values = {**{f"tr_{f}": cfg[f] for f in SIMPLE}, "tr_encoder": cfg["encoder"],
              "tr_weights": w if w in ("none", "imagenet") else "local file",
              "tr_weights_path": "" if w in ("none", "imagenet") else w,
              "tr_validation": "k-fold" if k >= 2 else "holdout", "tr_folds": k if k >= 2 else 5}
    for key, v in values.items():
        if overwrite or key not in st.session_state:
            st.session_state[key] = v


@st.cache_data(ttl=30, show_spinner=False)
def weights_notes(encoders: tuple) -> dict:
    """Where each encoder's ImageNet weights are on this machine now (installed, cached, internet)."""
    from roofseg.model.weights import availability_notes
    return availability_notes(encoders)


def _about(field: str):
    """A selectbox help: what each value is and when it helps (roofseg.choices)."""
    return "\n\n".join(f"**{v}**: {config.about(field, v)}" for v in config.CHOICES.get(field, []))


def form_inputs(base: dict) -> dict:
    """The sidebar widgets; returns the config fields they set (other fields stay as in base)."""
    sb = st.sidebar
    sb.header("New run")
    arch = sb.selectbox("Architecture", config.ARCHS, key="tr_arch", help=_about("arch"))
    encoders = [e for e in config.ENCODERS if not config.incompatible(arch, e)]
    if base["encoder"] not in encoders and not config.incompatible(arch, base["encoder"]):
        encoders.append(base["encoder"])  # a cloned run's encoder outside the curated list
    if st.session_state.get("tr_encoder") not in encoders:
        st.session_state["tr_encoder"] = encoders[0]
    notes = weights_notes(tuple(encoders))
    encoder = sb.selectbox("Encoder", encoders, key="tr_encoder",
                           help=f"Encoders that build with {arch}; beside each, where its ImageNet "
                                "weights are on this machine now.\n\n" + "\n\n".join(
                                    f"**{e}**: {config.about('encoder', e)}" for e in encoders
                                    if config.about('encoder', e)),
                           format_func=lambda e: f"{e} · {notes.get(e, '')}")
    weights = sb.radio("Encoder weights", ["none", "imagenet", "local file"], key="tr_weights",
                       horizontal=True, help=config.WEIGHTS_HELP + ". " + config.about("encoder_weights"))
    if weights == "imagenet" and "need the internet" in notes.get(encoder, ""):
        sb.warning(f"{encoder}: {notes[encoder]}. Offline, pick an encoder whose weights are installed.")
    elif weights == "imagenet" and notes.get(encoder) == "no ImageNet weights":
        sb.warning(f"{encoder} has no ImageNet weights; training would stop at the start.")
    if weights == "local file":
        weights = sb.text_input("Weights file", key="tr_weights_path",
                                placeholder="/path/to/encoder.pth").strip()
    out = {"arch": arch, "encoder": encoder, "encoder_weights": weights}
    out["in_channels"] = sb.selectbox("Input channels", config.CHANNELS, key="tr_in_channels",
                                      format_func={3: "3 (RGB)", 4: "4 (RGBA)"}.get)
    out["loss"] = sb.selectbox("Loss", config.LOSSES, key="tr_loss", help=_about("loss"))
    out["optimizer"] = sb.selectbox("Optimizer", config.OPTIMIZERS, key="tr_optimizer", help=_about("optimizer"))
    out["lr"] = sb.number_input("Learning rate", 0.0, 10.0, step=1e-4, format="%.1e", key="tr_lr")
    out["schedule"] = sb.selectbox("LR schedule", config.SCHEDULES, key="tr_schedule",
                                   help=_about("schedule"))
    left, right = sb.columns(2)
    out["batch_size"] = left.number_input("Batch size", 1, key="tr_batch_size")
    out["epochs"] = right.number_input("Epochs", 1, 10000, key="tr_epochs")
    out["augment"] = sb.selectbox("Augmentation", config.AUGMENTS, key="tr_augment", help=_about("augment"))
    with sb.expander("Fine-tuning and prediction"):
        out["encoder_lr_mult"] = st.number_input("Encoder lr multiplier", 0.0, 10.0, step=0.1,
                                                 key="tr_encoder_lr_mult", help=config.about("encoder_lr_mult"))
        out["freeze_encoder_epochs"] = st.number_input("Freeze encoder for epochs", 0, 10000,
                                                       key="tr_freeze_encoder_epochs",
                                                       help=config.about("freeze_encoder_epochs"))
        scratch = weights == "none" and not base.get("init_from")
        out["freeze_bn"] = st.checkbox("Freeze encoder BatchNorm statistics", key="tr_freeze_bn",
                                       disabled=scratch, help=config.about("freeze_bn"))
        if scratch:
            st.caption("No pretrained statistics to freeze with encoder weights `none`: they are learned.")
        out["keep"] = st.radio("Weights kept per fold", config.KEEP, key="tr_keep", horizontal=True,
                               help=_about("keep"))
        out["tta"] = st.checkbox("Test-time augmentation (8 flips/rotations)", key="tr_tta",
                                 help=config.about("tta"))
    if sb.radio("Validation", ["holdout", "k-fold"], key="tr_validation", horizontal=True,
                help=config.about("folds")) == "holdout":
        out["val_fraction"] = sb.number_input("Validation fraction", 0.0, 1.0, step=0.05,
                                              key="tr_val_fraction", help=HELP["val_fraction"])
        out["folds"] = 0
    else:
        out["folds"] = sb.number_input("Folds", 2, key="tr_folds", help="one model per fold")
    left, right = sb.columns(2)
    out["seed"] = left.number_input("Seed", 0, key="tr_seed", help=config.about("seed"))
    right.number_input("Seeds", 1, 20, 1, key="tr_n_seeds",
                       help="launch this many runs with seeds seed, seed+1, ...: the Compare page "
                            "then shows their mean ± std over seeds")
    out["name"] = sb.text_input("Run name", key="tr_name")
    out["notes"] = sb.text_area("Notes", key="tr_notes", height=68)
    return out


def start(fields: dict, n_seeds: int = 1) -> list:
    """Build the config, check it against its data and smp, launch it once per seed (seed,
    seed+1, ...); returns the run folders, or [] after showing why not (then no folder is made)."""
    try:
        cfg = RunConfig.from_dict(fields)
        with st.sidebar, st.spinner("Checking…"):
            train.preflight(cfg)
        return control.launch_seeds(cfg, n_seeds, common.runs_dir())
    except (ValueError, OSError) as e:  # ConfigError, DataError, ModelError, missing files
        st.sidebar.error(f"Not started: {e}")
        return []


def _duration(s: float | None) -> str:
    if s is None:
        return "…"
    m, s = divmod(int(round(s)), 60)
    return f"{m // 60}h {m % 60:02d}m" if m >= 60 else f"{m}m {s:02d}s" if m else f"{s}s"


def curves(run_dir) -> None:
    """Loss (train and val) and validation Dice / IoU against the epoch, across folds."""
    df = progress.curves_frame([run_dir], ["train_loss", "val_loss", "val_dice", "val_iou"])
    if df.empty:
        return
    panels = [("Loss", ["train_loss", "val_loss"], alt.Scale(zero=False)),
              ("Validation Dice / IoU", ["val_dice", "val_iou"], alt.Scale(domain=[0, 1]))]
    for col, (title, names, scale) in zip(st.columns(2), panels):
        chart = alt.Chart(df[df.metric.isin(names)], title=title, height=200).mark_line(point=True).encode(
            x=common.epoch_x("step", "epoch (all folds)", df["step"]),
            y=alt.Y("value:Q", title=None, scale=scale),
            color=alt.Color("metric:N", title=None),
            tooltip=["fold", "epoch", "metric", alt.Tooltip("value:Q", format=".4f")])
        col.altair_chart(common.zoomable(chart), width="stretch")


def _bad_lines(run_dir, n: int) -> None:
    if n:  # a power cut mid-write: the rest of the file is still read
        st.warning(f"{run_dir.name}/metrics.jsonl: {n} unreadable line(s) skipped")


def show_active(run_dir) -> None:
    p = progress.progress(run_dir)
    with st.container(border=True):
        head, button = st.columns([6, 1])
        title = f"**{p['name']}** · `{p['run_id']}`" if p["name"] != p["run_id"] else f"`{p['run_id']}`"
        head.markdown(f"{title} · {p['state']}")
        if button.button("Cancel", key=f"cancel_{p['run_id']}"):
            control.cancel(run_dir)
            st.rerun()
        if p["state"] == "queued":
            st.progress(0.0, text="queued: waiting for a free training slot")
            return
        _bad_lines(run_dir, p["bad_lines"])
        fold = f" · fold {p['fold'] + 1}/{p['folds']}" if p["folds"] > 1 else ""
        st.progress(p["fraction"], text=f"epoch {p['done']}/{p['total']}{fold} · elapsed "
                                        f"{_duration(p['elapsed_s'])} · ETA {_duration(p['eta_s'])}")
        curves(run_dir)


def live_runs(runs_dir) -> None:
    """Queued and running runs; polls every second while there are some."""
    @st.fragment(run_every=1 if progress.active_runs(runs_dir) else 5)
    def live():
        active = progress.active_runs(runs_dir)
        ids = [d.name for d in active]
        if set(st.session_state.get(LIVE, [])) - set(ids):  # one finished: refresh the whole page
            st.session_state[LIVE] = ids
            st.rerun()
        st.session_state[LIVE] = ids
        if not active:
            st.caption("No run is queued or running. Set one up in the sidebar and press Start.")
        for d in active:
            show_active(d)
    live()


def recent_runs(runs_dir) -> None:
    """The last few finished runs: final metrics in a table, a failed run's error and log."""
    done = progress.finished_runs(runs_dir, N_RECENT)
    if not done:
        return
    st.subheader("Recently finished")
    table = pd.DataFrame([results.run_row(d) for d in done])
    cols = [c for c in ["run_id", "name", "status", "arch", "encoder", "loss", "epochs_done",
                        "val_dice", "val_iou", "minutes"] if c in table]
    st.dataframe(table[cols], hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in ("val_dice", "val_iou", "minutes")})
    ok = table.run_id[table.status == "done"].tolist()
    if ok and st.button(f"Open the {len(ok)} done run(s) in Compare", key="to_compare"):
        st.session_state["selected_runs"] = ok
        st.switch_page("pages/compare.py")
    for d, r in zip(done, table.to_dict("records")):
        _bad_lines(d, runs.read_metrics(d)[1])
        if r["status"] == "failed":
            st.error(f"{r['name'] or d.name} failed: {r['error']}")
            with st.expander(f"Last lines of {d.name}/log.txt"):
                st.code(progress.log_tail(d), language=None)


def main() -> None:
    st.title("Train")
    prefill = st.session_state.pop("train_prefill", None)
    base = {**RunConfig().to_dict(), **st.session_state.get(FORM, {}), **(prefill or {})}
    _seed_widgets(base, overwrite=bool(prefill))
    if prefill and prefill.get("data"):
        st.session_state["dataset"] = prefill["data"]
        st.info(f"Form filled from a cloned run; dataset set to its data, `{prefill['data']}`.")
    data = common.current_dataset()
    st.sidebar.caption(f"Dataset: `{data}` (choose it on the Data page)")
    st.session_state[FORM] = cfg = {**base, **form_inputs(base), "data": str(data)}
    if cfg.get("exclude"):  # set by the Data page's label review (or a cloned run)
        st.sidebar.info(f"Left out of training: {cfg['exclude']} (their files stay as they are)")
        if st.sidebar.button("Train on them again", key="tr_clear_exclude"):
            st.session_state[FORM] = {**cfg, "exclude": ""}
            st.rerun()
    if prefill:  # a clone whose value this form cannot show (e.g. an arch no longer offered)
        lost = [f"{f} = {prefill[f]!r} (the form has {cfg[f]!r})" for f in CHOICE_FIELDS
                if f in prefill and prefill[f] != cfg[f]]
        if lost:
            st.warning("The cloned run used settings this form does not offer; check them before "
                       "Start: " + "; ".join(lost))
    # The Start button's key changes with each launch and the page re-renders at once, so the
    # second click of a double click refers to a button that is gone and launches nothing.
    n = st.session_state.setdefault(STARTS, 0)
    if st.sidebar.button("Start", type="primary", key=f"start_{n}", width="stretch"):
        started = start(cfg, int(st.session_state.get("tr_n_seeds", 1)))
        if started:
            st.session_state[STARTS] = n + 1
            st.session_state[FLASH] = f"Started {', '.join(d.name for d in started)}"
            st.rerun()
    if FLASH in st.session_state:
        st.sidebar.success(st.session_state.pop(FLASH))
    st.sidebar.caption("Runs beyond the free training slots (ROOFSEG_SLOTS, default 1) wait as queued.")
    runs_dir = common.runs_dir()
    live_runs(runs_dir)
    recent_runs(runs_dir)


common.ensure_routed(__file__)
main()
