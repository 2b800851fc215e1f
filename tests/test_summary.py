"""The summary CLI reports the paper's sizes without allocating the model."""

from pause_lm import summary
from pause_lm.model.transformer import ModelConfig

from conftest import LLAMA_FAMILY, run_python


def test_cli_prints_table5_total_for_1b():
  result = run_python(
    '-m', 'pause_lm.summary', '--gin_file=gin/models/1b.gin', '--gin.NUM_EMBEDDINGS=32297'
  )
  assert 'total parameters: 1,345,085,440' in result.stdout
  assert 'layers/mlp/wi' in result.stdout
  assert 'FLOPs/token' in result.stdout
  assert 'params + Adam state (float32): 15.03 GiB' in result.stdout


def test_table_is_the_same_scanned_or_not_and_sums_to_the_total():
  kwargs = dict(num_embeddings=100, num_layers=3, num_heads=2, emb_dim=16, mlp_dim=32, max_len=8)
  plain = summary.module_table(ModelConfig(**kwargs))
  assert plain == summary.module_table(ModelConfig(scan_layers=True, **kwargs))
  rows = dict((module, (per_copy, copies)) for module, per_copy, copies in plain)
  assert rows['layers/mlp/wi'] == (16 * 32 + 32, 3)
  assert rows['token_embed'] == (100 * 16, 1)
  assert rows['logits'] == (16 * 100, 1)  # untied and without bias
  report = summary.render(ModelConfig(**kwargs))
  total = sum(per_copy * copies for per_copy, copies in rows.values())
  assert f'total parameters: {total:,}' in report


def test_llama_family_rows_and_flops():
  kwargs = dict(
    num_embeddings=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=1,
    emb_dim=16,
    mlp_dim=32,
    max_len=8,
    **LLAMA_FAMILY,
  )
  config = ModelConfig(**kwargs)
  rows = dict(
    (module, (per_copy, copies)) for module, per_copy, copies in summary.module_table(config)
  )
  assert rows['layers/attention/key'] == (16 * 4, 2)  # one key/value head of 4
  assert rows['layers/mlp/wi_0'] == rows['layers/mlp/wi_1'] == (16 * 32, 2)
  assert rows['layers/pre_mlp_norm'] == (16, 2)  # RMSNorm: scale only
  assert 'logits' not in rows and 'position_embed' not in rows  # tied, rotary
  assert f'{config.flops_per_token(8):.4g}' in summary.render(config)
