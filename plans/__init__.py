"""What to run: the plans of tools/sweep.py (*.txt: lines of presets, markets and seeds) and the
presets they name (presets.py). Imports config and itself only."""
