"""The app's pages (routed by app.py); pages/common.py holds what they share."""
