"""roofseg app entry: page config and routing only (each page lives in pages/).

Start it with `make app` (or `streamlit run app.py`). ROOFSEG_RUNS_DIR and ROOFSEG_DATA override
where runs are kept and which dataset opens first (tests use them).
"""
import streamlit as st

from pages import common

st.set_page_config(page_title="roofseg", page_icon="🏠", layout="wide")

PAGES = [
    st.Page("pages/data.py", title="Data", icon="🗂️", default=True),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/runs.py", title="Runs", icon="📋"),
    st.Page("pages/compare.py", title="Compare", icon="🔍"),
    st.Page("pages/predict.py", title="Predict", icon="🖼️"),
    st.Page("pages/sweeps.py", title="Sweeps", icon="🎛️"),
]
page = st.navigation(PAGES)
common.mark_app_ran()
goto = st.session_state.pop("roofseg_goto", None)  # set by pages.common.ensure_routed
if goto:  # a deep link that arrived before this script had ever run: go on to it
    st.switch_page(goto)
page.run()
