"""Live latency: from the moment an epoch's metrics line is on disk to the moment the Train page in
a real browser shows it, with the real server (`streamlit run app.py`) and Chromium.

Set-up: a 64 px demo dataset and a runs folder in a temporary directory; one run folder made by
runs.create_run and marked running, its status.json pid a helper process (`python -c 'sleep'
RUN_ID`; runs.status accepts it because its command line names the run); the app opened at / (so
app.py's navigation is in place) and the Train page reached through the sidebar.

Then, --n times: append a metrics line as train.fit_fold does (runs.append_metrics: write, flush,
fsync) and note the wall time after it returns; in the page a MutationObserver notes the wall time
(Date.now()) at which the progress bar's text first reads "epoch k/N", and at which the Loss chart
first holds 2k points (train_loss and val_loss). Both clocks are this machine's, so the latency is
the difference. Appends are spaced by a random pause (0-1 s) after the previous epoch showed, so
they fall at every phase of the page's 1 s polling fragment (pages/train.py, run_every=1).
"""
from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import ROOT, med, parser, report

import browser_util as bu  # the browser tests' server and Chromium helpers

from roofseg.store import runs
from roofseg.config import RunConfig
from roofseg.data.demo import make_demo

NAME = "live_latency"
TARGET_S = 1.5

# Records, per epoch number, when the bar's text and the loss chart first showed it.
OBSERVER = """() => {
  window.__bar = {}; window.__chart = {};
  const look = () => {
    const now = Date.now();
    const bar = document.querySelector('[data-testid="stProgress"]');
    const m = bar && bar.innerText.match(/epoch (\\d+)\\//);
    if (m && !(m[1] in window.__bar)) window.__bar[m[1]] = now;
    const chart = document.querySelector('[data-testid="stVegaLiteChart"]');
    const n = chart ? chart.querySelectorAll('g.mark-symbol.role-mark path').length : 0;
    const k = Math.floor(n / 2);
    if (k > 0 && !(k in window.__chart)) window.__chart[k] = now;
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
  look();
}"""


def metrics_row(epoch: int) -> dict:
    """A row with the keys train.fit_fold writes, plausible values."""
    p = epoch / 30
    return {"fold": 0, "epoch": epoch, "train_loss": 1.2 - 0.6 * p, "train_dice": 0.3 + 0.5 * p,
            "val_loss": 1.25 - 0.5 * p, "val_dice": 0.25 + 0.5 * p, "val_iou": 0.15 + 0.45 * p,
            "val_precision": 0.5, "val_recall": 0.5, "val_accuracy": 0.9, "val_dice_img": 0.3,
            "lr": 1e-3, "epoch_s": 1.0, "time": time.time(), "best_val_dice": 0.25 + 0.5 * p}


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10, help="epochs appended (one latency each)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pauses")
    args = p.parse_args()
    if bu.chromium_missing():
        sys.exit(bu.chromium_missing())
    _common.machine()  # facts (and load average) before the server starts
    rng = random.Random(args.seed)
    bar_s, chart_s = [], []
    with tempfile.TemporaryDirectory(prefix="roofseg-bench-latency-") as tmp:
        tmp = Path(tmp)
        # the dataset only has to exist (the Data page opens first): the 64 px demo unless given
        data = (Path(args.data) if args.data not in (None, "demo")
                else make_demo(tmp / "demo64", n_images=12, n_labels=10, size=64, seed=0))
        runs_dir = tmp / "runs"
        total = args.n + 5  # the run never looks finished
        d = runs.create_run(RunConfig(data=str(data), epochs=total, name="latency"), runs_dir)
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", d.name],
                                  start_new_session=True)
        try:
            runs.set_status(d, state="running", pid=helper.pid, started=time.time())
            assert runs.status(d)["state"] == "running", runs.status(d)
            with bu.app_server(runs_dir, data, tmp / "data_root", tmp / "server.log") as server, \
                    bu.chromium() as (_, page):
                page.set_default_timeout(60_000)
                bu.open_page(page, server.url, "Current dataset")
                page.locator(bu.NAV_LINKS, has_text="Train").click()
                page.wait_for_function("() => /epoch 0\\//.test(document.querySelector("
                                       "'[data-testid=\"stProgress\"]')?.innerText || '')")
                page.evaluate(OBSERVER)
                for k in range(1, args.n + 1):
                    page.wait_for_timeout(rng.uniform(0, 1000))
                    runs.append_metrics(d, metrics_row(k))
                    t_disk = time.time()
                    page.wait_for_function(f"() => window.__bar[{k}] && window.__chart[{k}]", timeout=30_000)
                    bar_ms, chart_ms = page.evaluate(f"() => [window.__bar[{k}], window.__chart[{k}]]")
                    bar_s.append(bar_ms / 1000 - t_disk)
                    chart_s.append(chart_ms / 1000 - t_disk)
                    print(f"epoch {k}: bar {bar_s[-1]:.3f} s, chart {chart_s[-1]:.3f} s", flush=True)
                if "Traceback" in server.log_text():
                    print(server.log_text(), file=sys.stderr)
        finally:
            helper.kill()
            helper.wait()

    def figures(xs):
        return {"median_s": round(med(xs), 3), "max_s": round(max(xs), 3), "min_s": round(min(xs), 3),
                "all_s": [round(x, 3) for x in xs]}
    result = {"n": args.n, "target_s": TARGET_S, "poll_period_s": 1.0,
              "progress_text": figures(bar_s), "loss_chart": figures(chart_s),
              "loss_chart_after_first": figures(chart_s[1:] or chart_s)}
    rows = (("progress text `epoch k/N`", result["progress_text"]),
            ("Loss chart (2k points)", result["loss_chart"]),
            ("Loss chart, epochs 2.. (chart already drawn)", result["loss_chart_after_first"]))
    over = [k for k, (b, c) in enumerate(zip(bar_s, chart_s), start=1) if max(b, c) > TARGET_S]
    lines = [
        f"Metrics line on disk -> visible in Chromium on the Train page, {args.n} epochs "
        f"(64 px demo, fake running run, real `streamlit run app.py`; the page polls every 1 s):",
        "",
        "| shown by | median | max | min |",
        "|---|---|---|---|",
        *[f"| {what} | {f['median_s']:.2f} s | {f['max_s']:.2f} s | {f['min_s']:.2f} s |" for what, f in rows],
        "",
        f"- epoch 1 (the charts appear for the first time): progress text {bar_s[0]:.2f} s, "
        f"Loss chart {chart_s[0]:.2f} s",
        f"- target ≤ {TARGET_S} s: " + ("met for every epoch" if not over else
                                        f"exceeded at epoch(s) {', '.join(map(str, over))}"),
    ]
    report(NAME, "Live progress latency (epoch written -> shown in the browser)", lines, result, args.out)


if __name__ == "__main__":
    main()
