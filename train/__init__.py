"""The training script, `python train/run.py`, and its parts: the generated default data set
(synthetic.py), ImageFolder data and augmentation (data.py), checkpoints and RNG state
(checkpoint.py), --precision (precision.py) and the training step and its throughput (measure.py,
shared with bench/bench_train.py). See train/run.py's docstring."""
