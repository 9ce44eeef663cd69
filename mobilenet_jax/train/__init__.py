"""Training: `train_and_evaluate(config, workdir)` and the pieces it is made of."""
