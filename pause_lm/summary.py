"""Prints a model's size before anything is allocated: params per module, FLOPs, optimizer memory.

  python -m pause_lm.summary --gin_file=gin/models/1b.gin --gin.NUM_EMBEDDINGS=32297

Shapes come from `jax.eval_shape`, so even the 1B model is summarised in a second on a laptop.
"""

import re

from absl import app
from absl import flags
import jax

from pause_lm.runtime import console
from pause_lm.runtime import gin_utils
from pause_lm.model import sizing
from pause_lm.model.transformer import Decoder, ModelConfig

_SEQ_LEN = flags.DEFINE_integer(
  'seq_len', None, "Sequence length for FLOPs/token (default: the config's max_len)."
)

_LAYER_INDEX = re.compile(r'^layers_\d+$')
# Parameters + Adam's first and second moments, all float32.
_ADAM_BYTES_PER_PARAM = 3 * 4


def _is_boxed(x):
  return hasattr(x, 'unbox')


def module_table(config: ModelConfig):
  """Rows (module path, parameters per copy, copies), one per module that owns parameters.

  The per-layer modules of an unscanned model (layers_0, layers_1, ...) and the stacked ones of a
  scanned model both collapse into one 'layers/...' row with `copies = num_layers`, so the table has
  the same shape whatever `scan_layers` is. Shapes come from eval_shape: nothing is allocated.
  """
  params = sizing.abstract_params(Decoder(config))
  totals = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_boxed)[0]:
    names = [str(getattr(key, 'key', key)) for key in path][:-1]  # drop 'kernel', 'bias', ...
    module = '/'.join('layers' if _LAYER_INDEX.match(name) else name for name in names)
    size = leaf.unbox().size if _is_boxed(leaf) else leaf.size
    totals[module] = totals.get(module, 0) + size
  rows = []
  for module, size in totals.items():
    copies = config.num_layers if module.startswith('layers/') else 1
    rows.append((module, size // copies, copies))
  return rows


def render(config: ModelConfig, seq_len: int | None = None) -> str:
  """The full report as text."""
  seq_len = seq_len or config.max_len
  rows = module_table(config)
  total = sum(per_copy * copies for _, per_copy, copies in rows)
  width = max(len(module) for module, _, _ in rows)
  lines = [f'{"module":<{width}}  {"params/copy":>14}  {"copies":>6}  {"params":>15}']
  lines += [
    f'{module:<{width}}  {per_copy:>14,}  {copies:>6}  {per_copy * copies:>15,}'
    for module, per_copy, copies in rows
  ]
  flops = config.flops_per_token(seq_len)
  memory = total * _ADAM_BYTES_PER_PARAM
  lines += [
    '',
    f'total parameters: {total:,}',
    f'training FLOPs/token at seq_len {seq_len}: {flops:.4g} '
    '(6 x matmul params + 12 x layers x emb_dim x seq_len)',
    f'params + Adam state (float32): {memory / 2**30:.2f} GiB '
    f'({_ADAM_BYTES_PER_PARAM} bytes/param)',
  ]
  return '\n'.join(lines)


def main(argv):
  gin_utils.reject_positional_args(argv)
  console.setup_logging()
  gin_utils.parse_settings()
  config = ModelConfig()
  if config.num_embeddings is None:
    raise app.UsageError(
      'num_embeddings is unset: pass --gin.NUM_EMBEDDINGS=<rows>, '
      "e.g. 32297 for the paper's Table 5 counts"
    )
  print(config)
  print(render(config, _SEQ_LEN.value))


if __name__ == '__main__':
  gin_utils.run(main)
