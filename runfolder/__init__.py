"""The run folder: its files written whole or not at all, an older config.json read in the current
settings' names (migration.py), the resumable checkpoint and the kept weights, and the weights a run may
start from. Imports config and itself only."""
