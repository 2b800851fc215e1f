"""Latency of pause inference: M pauses should cost one longer prefill, not M decode steps.

For each model size, batch size and number of pauses M, times `decoding.generate` producing 32
tokens after a 256-token prefix + M pauses (greedy, EOS disabled so every run decodes all 32), and
prints the median and best of several runs and their ratios to the first M (0 by default); on a
shared machine the best run is the steadier figure. Compilation is excluded (every shape runs
once before timing), every timed run waits for its result with block_until_ready, and the M
settings are timed round-robin so background load affects them alike.

  python benchmarks/decode.py [--sizes=tiny,130m] [--batch_sizes=1,4] [--repeats=7]
"""

import statistics
import time

from absl import app
from absl import flags
import gin
import jax
import jax.numpy as jnp
import numpy as np

from pause_lm.model import decoding
from pause_lm.model.transformer import Decoder, ModelConfig

_SIZES = flags.DEFINE_list('sizes', ['tiny', '130m'], 'gin/models/<size>.gin to benchmark.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '4'], 'Batch sizes.')
_PAUSES = flags.DEFINE_list('pauses', ['0', '10', '50'], 'Numbers of pauses M.')
_PREFIX_LEN = flags.DEFINE_integer('prefix_len', 256, 'Real prefix tokens before the pauses.')
_DECODE_LEN = flags.DEFINE_integer('decode_len', 32, 'Tokens generated.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed runs per setting (median reported).')

NUM_EMBEDDINGS = 32297  # the paper's table size
VOCAB = 32100  # T5's SentencePiece vocabulary; the pause row is id VOCAB


def load_config(size):
  gin.clear_config()
  gin.parse_config_files_and_bindings(
    [f'gin/models/{size}.gin'],
    [
      f'NUM_EMBEDDINGS = {NUM_EMBEDDINGS}',
      "ModelConfig.dtype = 'float32'",
      'ModelConfig.scan_layers = False',
      "ModelConfig.remat_policy = 'none'",
    ],
  )
  return ModelConfig()


def interleaved_timings(fns, repeats):
  """Seconds of `repeats` runs of each fn, timed round-robin so background load hits all alike."""
  for fn in fns:
    jax.block_until_ready(fn())  # compile and warm up
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, fn_times in zip(fns, times):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      fn_times.append(time.perf_counter() - start)
  return times


def generate_fn(params, config, tokens, pauses):
  batch, prefix_len = tokens.shape
  prefixes = jnp.asarray(np.pad(tokens, ((0, 0), (0, pauses)), constant_values=VOCAB))
  lengths = jnp.full((batch,), prefix_len + pauses, jnp.int32)
  return lambda: decoding.generate(
    params,
    config,
    prefixes,
    lengths,
    max_decode_len=_DECODE_LEN.value,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
  )


def main(argv):
  del argv
  print(
    f'device: {jax.devices()[0].device_kind}, prefix {_PREFIX_LEN.value} tokens + M pauses, '
    f'{_DECODE_LEN.value} generated tokens, {_REPEATS.value} runs each'
  )
  print(
    f'{"model":>6} {"batch":>5} {"M":>4} {"median (s)":>10} {"best (s)":>8} {"ms/token":>9} '
    f'{"ratio med":>9} {"best":>6}'
  )
  rng = np.random.default_rng(0)
  for size in _SIZES.value:
    config = load_config(size)
    params = jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    params = params['params']
    for batch in map(int, _BATCH_SIZES.value):
      tokens = rng.integers(1, VOCAB, (batch, _PREFIX_LEN.value)).astype(np.int32)
      pauses = [int(m) for m in _PAUSES.value]
      timings = interleaved_timings(
        [generate_fn(params, config, tokens, m) for m in pauses], _REPEATS.value
      )
      medians = [statistics.median(t) for t in timings]
      bests = [min(t) for t in timings]
      for m, median, best in zip(pauses, medians, bests):
        print(
          f'{size:>6} {batch:>5} {m:>4} {median:>10.3f} {best:>8.3f} '
          f'{1000 * median / _DECODE_LEN.value:>9.1f} {median / medians[0]:>8.2f}x '
          f'{best / bests[0]:>6.2f}x',
          flush=True,
        )


if __name__ == '__main__':
  app.run(main)
