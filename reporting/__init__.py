"""Reporting: the metrics from ranks, the runs' tables, the report, its figures, the paired
comparison and the documents' generated tables. Never imports torch, nor the training side:
it reads run folders. Imports config, plans (the presets' names), runfolder.files,
runfolder.migration and itself only (tests/test_imports.py)."""
