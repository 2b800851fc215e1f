"""Gin bindings for a model and batch small enough for training tests on 2 CPU cores."""

SMALL = (
    'ModelConfig.num_layers = 2',
    'ModelConfig.num_heads = 2',
    'ModelConfig.emb_dim = 64',
    'ModelConfig.mlp_dim = 128',
    'ModelConfig.max_len = 64',
    'SEQUENCE_LENGTH = 32',
    'BATCH_SIZE = 8',
    'WARMUP_STEPS = 2',
    'train.log_every_steps = 1',
)
