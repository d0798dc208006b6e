"""Shared helpers (numpy/scipy/scikit-learn utilities only)."""
