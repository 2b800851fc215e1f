"""The training loop, its hooks, the jitted step and its state, the optimizer, settings checks
and ahead-of-time compilation. Evaluation is handed in (`train.make_evaluator`), never imported."""
