"""The run folder: its files written whole or not at all, the resumable checkpoint and the kept
weights, and the weights a run may start from. Imports config and itself only."""
