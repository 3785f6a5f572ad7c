"""Figures and the model report."""
