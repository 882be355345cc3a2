"""Sweeps page: define a hyperparameter sweep in the sidebar (fields to vary with their choices or
ranges, the fixed settings, sampler, budget, pruner, workers); Start creates it and launches its
background workers (sweep.start_sweep returns at once).

The main area follows one sweep, read back from its study and run folders on every load: progress,
the trials table (live while workers run), the best trials (open them in Compare), the metric
against each varied field, an isolation plot for a chosen field, parallel coordinates, edge
warnings, and Cancel / Resume.
"""
from __future__ import annotations

import altair as alt
import streamlit as st

from pages import common
from roofseg import config
from roofseg.sweep import study as sweep
from roofseg.sweep import report as sweep_report
from roofseg.config import RunConfig

STARTS = "sw_starts"   # session key: launches so far; part of the Start button's key (as on Train)
FLASH = "sw_flash"     # session key: a message shown once after a rerun
NOT_VARIED = ("device",)  # where a trial runs, not what it learns
# field -> choices offered: config.CHOICES, plus the encoders (any smp name is valid, so CHOICES
# leaves them out; these are the ones offered), the architecture and encoder first
CHOICES = {k: v for k, v in {"arch": config.CHOICES["arch"], "encoder": config.ENCODERS,
                             **config.CHOICES}.items() if k not in NOT_VARIED}
# numeric fields offered, with the range and scale the form starts from
RANGES = {"lr": (1e-4, 3e-3, True), "weight_decay": (1e-6, 1e-2, True), "momentum": (0.8, 0.99, False),
          "batch_size": (2, 8, False), "epochs": (10, 50, False), "warmup_epochs": (0, 3, False),
          "threshold": (0.3, 0.7, False)}
FIXED = ["arch", "encoder", "loss", "optimizer", "lr", "augment", "batch_size", "epochs"]
HELP = config.field_help()


def vary_inputs() -> dict:
    """Fields to vary and, for each, its choices or range; returns the spec's `space`."""
    sb = st.sidebar
    vary = sb.multiselect("Vary", [*CHOICES, *RANGES], default=list(sweep.DEFAULT_SPACE), key="sw_vary",
                          help="The fields the sampler chooses for each trial; every other field is fixed.")
    space = {}
    for f in vary:
        if f in CHOICES:
            default = sweep.DEFAULT_SPACE.get(f, {}).get("choices") or CHOICES[f][:2]
            space[f] = {"choices": sb.multiselect(f, CHOICES[f], default=default, key=f"sw_ch_{f}",
                                                  help=HELP.get(f))}
        else:
            lo, hi, log = RANGES[f]
            is_int = isinstance(lo, int)
            left, right = sb.columns(2)
            fmt = None if is_int else ("%.1e" if log else "%.3f")
            space[f] = {"low": left.number_input(f"{f} from", value=lo, key=f"sw_lo_{f}", format=fmt),
                        "high": right.number_input("to", value=hi, key=f"sw_hi_{f}", format=fmt),
                        "log": sb.checkbox(f"{f}: log scale", value=log, key=f"sw_log_{f}",
                                           help="sample evenly in log(value): right for lr and decay")}
    return space


def fixed_inputs(space: dict) -> dict:
    """The fixed settings not varied (the rest keep RunConfig's defaults), on the current dataset."""
    d = RunConfig()
    out = {"data": str(common.current_dataset())}
    with st.sidebar.expander("Fixed settings"):
        for f in [f for f in FIXED if f not in space]:
            if f in CHOICES:
                opts = CHOICES[f]
                out[f] = st.selectbox(f, opts, index=opts.index(getattr(d, f)), key=f"sw_fix_{f}")
            elif f == "lr":
                out[f] = st.number_input(f, 1e-6, 10.0, value=d.lr, format="%.1e", key="sw_fix_lr")
            else:
                out[f] = st.number_input(f, 1, 10000, value=getattr(d, f), key=f"sw_fix_{f}")
        weights = ["imagenet", "none"]
        out["encoder_weights"] = st.radio(
            "encoder weights", weights, index=weights.index(d.encoder_weights), key="sw_fix_weights",
            horizontal=True, help=config.WEIGHTS_HELP + ". With imagenet, Start checks that every encoder "
                                  "the sweep may pick has its weights here (installed, cached or downloadable).")
        folds = st.number_input("folds", 0, 20, value=0, key="sw_fix_folds",
                                help="0 = holdout; k >= 2 = k-fold (the sweep optimises the fold mean)")
        out["folds"] = int(folds)
        out["num_threads"] = int(st.number_input("torch threads (0 = default)", 0, 256, 0,
                                                 key="sw_fix_threads"))
    return out


def search_inputs() -> dict:
    sb = st.sidebar
    left, right = sb.columns(2)
    out = {"sampler": left.selectbox("Sampler", sweep.SAMPLERS, key="sw_sampler",
                                     help="tpe: model-based; random; qmc: quasi-random, even coverage; "
                                          "grid: every combination (numeric ranges give 3 points)"),
           "trials": int(right.number_input("Trials", 1, 10000, 20, key="sw_trials")),
           "metric": left.selectbox("Metric", sweep.METRICS, key="sw_metric",
                                    help="summary.json value to optimise (k-fold: the fold mean)"),
           "pruner": right.selectbox("Pruner", sweep.PRUNERS, key="sw_pruner",
                                     help="stop bad trials early on fold 0's per-epoch metric")}
    out["direction"] = sweep.default_direction(out["metric"])
    if out["pruner"] != "none":
        out["pruner_warmup"] = int(sb.number_input("Epochs before pruning", 0, 1000, 1, key="sw_warmup"))
    out["workers"] = int(sb.number_input("Workers", 1, 64, 1, key="sw_workers",
                                         help="background processes; trials beyond ROOFSEG_SLOTS wait"))
    out["storage"] = sb.text_input("Storage (optional)", key="sw_storage",
                                   placeholder="postgresql://user@host/db",
                                   help="empty: a journal file in the sweep folder; a database URL lets "
                                        "workers on other machines sharing runs/ join the sweep").strip()
    out["name"] = sb.text_input("Sweep name", key="sw_name", placeholder="sweep-<date>-<time>").strip()
    return out


def start(space: dict, base: dict, search: dict) -> str | None:
    """Create the sweep and launch its workers; its name, or None after showing why not."""
    s = dict(search)
    n_workers, storage = s.pop("workers"), s.pop("storage")
    spec = sweep.SweepSpec(name=s.pop("name") or sweep.default_name(), base=base, space=space, **s)
    try:
        with st.sidebar, st.spinner("Checking…"):
            sweep.start_sweep(spec, common.runs_dir(), n_workers, storage or None)
        return spec.name
    except (ValueError, OSError) as e:  # ConfigError, SweepError, DataError, ModelError, files
        st.sidebar.error(f"Not started: {e}")
        return None
    except Exception as e:  # a database that cannot be reached raises SQLAlchemy's own errors
        st.sidebar.error(f"Not started: {type(e).__name__}: {e}")
        return None


def _axis(kind: str, title: str) -> alt.X:
    if kind == "choice":
        return alt.X("x:N", title=title)
    return alt.X("x:Q", title=title, scale=alt.Scale(type="log" if kind == "log" else "linear", zero=False))


def plots(ov: dict) -> None:
    spec, metric = ov["spec"], ov["spec"].metric
    st.subheader(f"{metric} against each varied field")
    cols = st.columns(min(3, len(ov["effects"])))
    for i, (p, df) in enumerate(ov["effects"].items()):
        kind = sweep_report.kind(spec, p)
        chart = alt.Chart(df).mark_circle(size=70, opacity=0.8).encode(
            x=_axis(kind, p),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            tooltip=["trial", "x", alt.Tooltip("value:Q", format=".4f"), "run_id"])
        # a choice's axis is categorical: only the metric axis can zoom there
        chart = common.zoomable(chart, ("y",) if kind == "choice" else ("x", "y"))
        cols[i % len(cols)].altair_chart(chart.properties(height=220), width="stretch")

    st.subheader("Isolation")
    sci = ov["scientific"]
    iso = ov["isolation"]
    st.caption(f"The best trial for each value of **{sci}**, over every other varied field (the "
               "playbook's way to compare values of a scientific field fairly).")
    if not iso.empty:
        chart = alt.Chart(iso).mark_bar().encode(
            x=alt.X("group:N", title=sci, sort=alt.SortField("order")),
            y=alt.Y("best:Q", title=f"best {metric}"),
            tooltip=["group", alt.Tooltip("best:Q", format=".4f"), "trial", "n",
                     *[p for p in spec.space if p != sci]])
        st.altair_chart(chart.properties(height=240), width="stretch")
        st.dataframe(iso.drop(columns="order"), hide_index=True)

    st.subheader("Parallel coordinates")
    par = ov["parallel"]
    if not par.empty:
        chart = alt.Chart(par).mark_line(point=True, opacity=0.7).encode(
            x=alt.X("axis:N", sort=alt.SortField("order"), title=None),
            y=alt.Y("pos:Q", title="position in the searched range", scale=alt.Scale(domain=[0, 1])),
            detail="trial:N", color=alt.Color("value:Q", title=metric, scale=alt.Scale(scheme="viridis")),
            tooltip=["trial", "axis", "label", alt.Tooltip("value:Q", format=".4f")])
        st.altair_chart(chart.properties(height=280), width="stretch")


def results_view(name: str, runs_dir, scientific: str | None, was_active: bool) -> None:
    ov = sweep_report.overview(name, runs_dir, scientific)
    prog, o, frame = ov["progress"], ov["outcome"], ov["frame"]
    if was_active and not _active(ov):  # the sweep just ended: refresh the buttons and stop polling
        st.rerun()
    c = st.columns(5)
    c[0].metric("Trials", f"{prog['counted']}/{prog['budget']}", help="trials that count in the budget")
    c[1].metric("Running", o["running"])
    c[2].metric("Workers", len(prog["workers"]))
    c[3].metric("Failed", f"{o['failed_frac']:.0%}", help=f"{o['failed']} failed, {o['interrupted']} "
                "interrupted (re-run; not in the budget)")
    c[4].metric("Pruned", f"{o['pruned_frac']:.0%}", help=f"{o['pruned']} pruned")
    if len(ov["best"]):
        b = ov["best"].iloc[0]
        params = ", ".join(f"{p} = {b[p]:.3g}" if isinstance(b[p], float) else f"{p} = {b[p]}"
                           for p in ov["spec"].space)
        st.success(f"Best: trial {b['trial']} · {ov['spec'].metric} {b['value']:.4f} · {params} · "
                   f"`{b['run_id']}`")
    for w in ov["warnings"]:
        st.warning(w)
    st.dataframe(frame, hide_index=True, column_config={
        "value": st.column_config.NumberColumn(ov["spec"].metric, format="%.4f"),
        "seconds": st.column_config.NumberColumn("s", format="%.0f"),
        "lr": st.column_config.NumberColumn("lr", format="%.2e")})
    if len(ov["best"]):
        plots(ov)


def _active(ov: dict) -> bool:
    return bool(ov["progress"]["workers"]) or ov["outcome"]["running"] > 0


def controls(name: str, runs_dir, ov: dict) -> None:
    prog = ov["progress"]
    left, mid, right = st.columns(3, vertical_alignment="bottom")
    if _active(ov):
        if left.button("Cancel sweep", key=f"sw_cancel_{name}"):
            with st.spinner("Stopping workers…"):
                r = sweep.cancel_sweep(name, runs_dir)
            st.session_state[FLASH] = f"Cancelled: workers {r['stopped']} stopped"
            st.rerun()
    elif prog["counted"] < prog["budget"]:
        n = int(mid.number_input("Workers", 1, 64, 1, key=f"sw_resume_n_{name}"))
        if left.button("Resume", key=f"sw_resume_{name}"):
            sweep.launch_workers(name, runs_dir, n)
            st.rerun()
    best = ov["best"]
    if len(best) and right.button(f"Open the best {len(best)} in Compare", key=f"sw_compare_{name}"):
        st.session_state["selected_runs"] = best["run_id"].tolist()
        st.switch_page("pages/compare.py")


def main() -> None:
    st.title("Sweeps")
    st.sidebar.header("New sweep")
    space = vary_inputs()
    base = fixed_inputs(space)
    search = search_inputs()
    n = st.session_state.setdefault(STARTS, 0)
    if st.sidebar.button("Start", type="primary", key=f"sw_start_{n}", width="stretch"):
        name = start(space, base, search)
        if name:
            st.session_state[STARTS] = n + 1
            st.session_state["sw_current"] = name
            st.session_state[FLASH] = f"Started sweep {name}"
            st.rerun()
    if FLASH in st.session_state:
        st.toast(st.session_state.pop(FLASH))

    runs_dir = common.runs_dir()
    names = sweep.list_sweeps(runs_dir)
    if not names:
        st.info("No sweeps yet: choose what to vary in the sidebar and press Start.")
        return
    if st.session_state.get("sw_current") not in names:
        st.session_state["sw_current"] = names[0]
    left, right = st.columns([2, 1])
    name = left.selectbox("Sweep", names, key="sw_current")
    spec = sweep.load_spec(name, runs_dir)
    scientific = right.selectbox("Isolation field", list(spec.space), key=f"sw_sci_{name}",
                                 help="the field whose values the isolation plot compares")
    st.caption(f"{spec.sampler} sampler · pruner {spec.pruner} · {spec.direction} {spec.metric} · "
               f"storage {sweep.redact(spec.storage)} · data `{spec.base.get('data')}`")
    ov = sweep_report.overview(name, runs_dir, scientific)
    controls(name, runs_dir, ov)
    active = _active(ov)
    st.fragment(run_every=2 if active else None)(results_view)(name, runs_dir, scientific, active)


common.ensure_routed(__file__)
main()
