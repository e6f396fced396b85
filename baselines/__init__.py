"""The baselines scored on ACMR's splits and candidates: popularity and the NCF models
(models.py). Imports torch, config and itself only."""
