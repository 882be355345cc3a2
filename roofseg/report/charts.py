"""Learning curves for the report: altair charts rendered to inline SVG by vl-convert.

vl-convert renders Vega-Lite in-process (no browser, no server), so the SVG needs no script to
display and the report opens offline. Each SVG's element ids get a per-chart prefix, because
several inline SVGs share one HTML document and a repeated id (a clip path) would make one
chart borrow another's.
"""
from __future__ import annotations

import io
import re

import altair as alt

from roofseg.store import compare, progress

WIDTH, HEIGHT = 300, 190
LOSS = {"train_loss": "train loss", "val_loss": "val loss"}
_ID = re.compile(r'\bid="([^"]+)"')


def to_svg(chart, prefix: str) -> str:
    """The chart as an <svg> element (str), ids prefixed with `prefix`."""
    try:
        import vl_convert  # noqa: F401  (altair's svg export needs it; say so plainly when absent)
    except ImportError:
        raise RuntimeError("vl-convert-python is not installed (the report draws its charts with it): "
                           "run `pip install -r requirements.txt`") from None
    buf = io.StringIO()
    # max_rows=None: a report of many long runs must not stop at altair's 5000-row guard
    with alt.data_transformers.enable("default", max_rows=None):
        chart.save(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop an XML prolog, which is not allowed inside HTML
    for old in set(_ID.findall(svg)):
        new = f"{prefix}-{old}"
        svg = (svg.replace(f'id="{old}"', f'id="{new}"').replace(f"url(#{old})", f"url(#{new})")
               .replace(f'href="#{old}"', f'href="#{new}"'))
    return svg


def _x(epochs) -> alt.X:
    """The epoch axis: integer ticks over exactly the logged epochs (as the app's charts: a
    'nice' range would reach epoch 0, and 1.5 would print as a second "2")."""
    lo, hi = int(min(epochs)), int(max(epochs))
    domain = [lo, hi] if hi > lo else [lo - 0.5, hi + 0.5]  # one epoch: its tick in the middle
    ticks = list(range(lo, hi + 1)) if hi - lo <= 12 else None  # few epochs: every one, no repeats
    return alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain=domain, nice=False, padding=8),
                 axis=alt.Axis(format="d", tickMinStep=1, values=ticks) if ticks else
                 alt.Axis(format="d", tickMinStep=1))


def run_curves(run_dir, prefix: str) -> str | None:
    """One run: train and val loss (left) and val Dice (right) per epoch, a colour per fold.
    None when the run has no epochs yet."""
    long = progress.curves_frame([run_dir], [*LOSS, "val_dice"])
    if long.empty:
        return None
    long["fold"] = long["fold"].astype(str)
    loss = long[long["metric"].isin(list(LOSS))].assign(curve=lambda f: f["metric"].map(LOSS))
    dice = long[long["metric"] == "val_dice"]
    fold = alt.Color("fold:N", title="fold")
    x = _x(long["epoch"])
    charts = []
    if not loss.empty:
        y = alt.Y("value:Q", title="loss", scale=alt.Scale(zero=False))
        # points as their own layer: with mark_line(point=True) the dash legend loses its strokes
        lines = alt.Chart(loss).mark_line().encode(
            x=x, y=y, color=fold, strokeDash=alt.StrokeDash("curve:N", title="curve"), detail="fold:N")
        dots = alt.Chart(loss).mark_circle(size=25).encode(x=x, y=y, color=fold, detail="curve:N")
        charts.append(alt.layer(lines, dots).properties(title="loss", width=WIDTH, height=HEIGHT))
    if not dice.empty:
        charts.append(alt.Chart(dice).mark_line(point=True).encode(
            x=x, y=alt.Y("value:Q", title="val Dice", scale=alt.Scale(domain=[0, 1])), color=fold,
        ).properties(title="validation Dice", width=WIDTH, height=HEIGHT))
    if not charts:
        return None
    return to_svg(alt.hconcat(*charts).resolve_scale(color="shared"), prefix)


def compare_curves(run_dirs, prefix: str) -> str | None:
    """Several runs: val Dice per epoch, the mean over folds with a ± std band for k-fold runs
    (compare.curves). None with fewer than two runs or no epochs."""
    if len(run_dirs) < 2:
        return None
    df = compare.curves(run_dirs, "val_dice")
    if df.empty:
        return None
    order = list(dict.fromkeys(df["label"]))
    palette = alt.Scale(domain=order)  # the band's fill and the line's colour map runs alike
    run = alt.Color("label:N", title="run", scale=palette, legend=alt.Legend(labelLimit=420))
    x = _x(df["epoch"])
    line = alt.Chart(df).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="val Dice (mean over folds)", scale=alt.Scale(domain=[0, 1])),
        color=run)
    band_df = df[df["n_folds"] >= 2].dropna(subset=["lo", "hi"])
    layers = [line]
    if not band_df.empty:
        layers.insert(0, alt.Chart(band_df).mark_area(opacity=0.18).encode(
            # fill, not color: a legend drawn from the faint band would fade the runs' swatches
            x=x, y="lo:Q", y2="hi:Q", fill=alt.Fill("label:N", scale=palette, legend=None)))
    # independent legends: otherwise vega-lite merges the band's (hidden) fill legend with the
    # line's colour legend on the same field, and the runs' legend disappears
    chart = alt.layer(*layers).resolve_legend(color="independent", fill="independent")
    return to_svg(chart.properties(width=2 * WIDTH, height=HEIGHT + 40, title="validation Dice of every run"),
                  prefix)
