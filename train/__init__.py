"""The training script, `python train/run.py`, and its parts: the configuration (config.py), the
loop and evaluation (engine.py), what a run reports (report.py), checkpoints (checkpoint.py), the
data (data.py, synthetic.py), --precision (precision.py), the training step and its throughput
(measure.py, shared with bench/bench_train.py) and what the command-line tools share (cli.py);
the analyses of a checkpoint: visualize.py, features.py, invariance.py. See docs/training.md."""
