"""roofseg app entry: routes only (placeholder until the pages land)."""
import streamlit as st

st.title("roofseg")
st.write("The app pages are being built; use `python -m roofseg --help` meanwhile.")
