"""Scores and their plots: CARE score, nudity rate, loss curves."""
