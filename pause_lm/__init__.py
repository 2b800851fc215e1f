"""pause-lm: decoder-only language models trained and evaluated with <pause> tokens."""
