"""The experiment tools, run as `python -m tools.<name>`: sweep (grids of runs on Ray), tune
(hyper-parameter search), bench (speed), authors_weights (the authors' released checkpoints),
trained (recommendations and re-scoring from kept weights). They import everything below them;
nothing imports them."""
