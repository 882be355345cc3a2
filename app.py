"""roofseg app entry: page config and routing only (each page lives in pages/).

Start it with `make app` (or `streamlit run app.py`). ROOFSEG_RUNS_DIR and ROOFSEG_DATA override
where runs are kept and which dataset opens first (tests use them).
"""
import streamlit as st

from pages import common

st.set_page_config(page_title="roofseg", page_icon=":material/roofing:", layout="wide")

# Material icons are bundled with Streamlit, so they render without an emoji font.
PAGES = [
    st.Page("pages/data.py", title="Data", icon=":material/folder_open:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/tune:"),
]
# The page files live in pages/, so until this script first calls st.navigation, Streamlit would
# list their file names (app, common, compare, ...) as a sidebar of its own. .streamlit/config.toml
# turns that sidebar off (showSidebarNavigation = false), and the real one is drawn here instead.
page = st.navigation(PAGES, position="hidden")
common.mark_app_ran()
with st.sidebar:
    for p in PAGES:
        st.page_link(p)
goto = st.session_state.pop("roofseg_goto", None)  # set by pages.common.ensure_routed
if goto:  # a deep link that arrived before this script had ever run: go on to it
    st.switch_page(goto)
try:
    page.run()
finally:  # also after st.rerun/st.switch_page, which end a run by raising
    common.preload()
