"""The run folder: its files written whole or not at all (files.py), an older config.json read in
the current settings' names (migration.py), the resumable checkpoint and the kept weights, and the
weights a run may start from. files.py and migration.py import config only; the others also the
data, the model and reporting.runs (tests/test_imports.py's LAYERS)."""
