r"""One-shot check of a GPU (or TPU): the 1B step's MFU and memory, attention kernels, decoding.

  python benchmarks/accelerator_check.py --output=docs/results/accelerator_check_h100.json
  python benchmarks/accelerator_check.py --tiny --output=/tmp/check.json   # any CPU, seconds

Writes one JSON (rewritten after each part, so a run cut short keeps what it finished) with,
measured in one process:
- `train_step`: the 1B bfloat16 pretraining step (gin/models/1b.gin, scanned layers;
  `train_state.jit_train_step`, the trainer's own step) at 8 x 2048 tokens, in three variants
  (`STEP_VARIANTS`: the file as shipped, cuDNN attention, cuDNN attention without remat). Each
  has seconds per step, tokens/s, model FLOP/s, MFU against the chip's datasheet dense peak
  (`train_state.PEAK_FLOPS_BY_DEVICE_KIND`, or --peak_tflops; goal >= 50%), the same rate against
  a large matmul measured in the same run, and `memory`: XLA's compiled memory analysis of the
  step on one device (arguments, outputs, temporaries, and the peak they add up to).
- `attention`: forward + backward of causal `jax.nn.dot_product_attention` at the model's
  shapes with implementation='xla' and 'cudnn' (the fused kernel; an error is recorded where it
  is unavailable, e.g. on CPUs), and their largest output difference.
- `decode`: `decoding.generate` latency after a --prefix_len prefix + M pauses for M = 0, 10, 50
  (round-robin timings, median and best), and each M's ratio to M = 0.
Each part records its error instead of stopping the run, so one failure costs one field.
On one H100 the whole check takes a few minutes (mostly compilation); `--tiny` runs the same
code paths on a small model so that a CPU test keeps the script working.
"""

from collections.abc import Callable, Sequence
import functools
import json
import statistics
import time
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from pause_lm.model import decoding
from pause_lm.training import train_state
import train_step as train_step_lib

_OUTPUT = flags.DEFINE_string('output', 'accelerator_check.json', 'Where the JSON goes.')
_TINY = flags.DEFINE_bool(
  'tiny',
  False,
  "gin/models/tiny.gin at toy sizes (with the 1B file's scan and remat "
  'settings), so the check runs in seconds on a CPU.',
)
_CHECK_STEPS = flags.DEFINE_integer('check_steps', 10, 'Timed train steps.')
_CHECK_REPEATS = flags.DEFINE_integer('check_repeats', 5, 'Timed runs per attention/decode case.')
_PREFIX = flags.DEFINE_integer('prefix_len', 256, 'Decode: real prefix tokens before the pauses.')
_DECODE_LEN = flags.DEFINE_integer('decode_len', 32, 'Decode: tokens generated.')
_DECODE_BATCH = flags.DEFINE_integer('decode_batch_size', 1, 'Decode: batch size.')
_BATCH = flags.DEFINE_integer('step_batch_size', 8, 'Train step: sequences of 2048 tokens.')
_VARIANTS = flags.DEFINE_list('variants', None, 'Train-step variants to run (default: all).')
_PAUSES = (0, 10, 50)

# 1B step on one 80 GB GPU: 8 x 2048 tokens per step.
FULL = {
  'model': '1b',
  'batch_size': 8,
  'sequence_length': 2048,
  'dtype': 'bfloat16',
  'matmul_size': 8192,
  'num_embeddings': train_step_lib.NUM_EMBEDDINGS,
}
TINY = {
  'model': 'tiny',
  'batch_size': 2,
  'sequence_length': 32,
  'dtype': 'bfloat16',
  'matmul_size': 256,
  'num_embeddings': 512,
}
_REMAT = 'dots_with_no_batch_dims_saveable'
_TINY_BINDINGS = ('ModelConfig.scan_layers = True',)
# Train-step variants, each timed and memory-checked on its own: the 1B file as shipped (XLA
# attention, remat keeping the matmul outputs), then cuDNN's fused attention with that remat,
# then cuDNN without remat (fastest if its activations fit). The first that runs is decoded.
STEP_VARIANTS = (
  ('1b_gin', _REMAT, None),
  ('cudnn_attention', _REMAT, 'cudnn'),
  ('cudnn_attention_no_remat', 'none', 'cudnn'),
)


def _guarded(name: str, fn: Callable[[], dict]) -> dict:
  """Runs one part; its error (type, message, last frames) goes into the JSON instead."""
  start = time.perf_counter()
  try:
    result = fn()
  except Exception as e:  # pylint: disable=broad-except
    logging.exception('%s failed', name)
    result = {
      'error': f'{type(e).__name__}: {e}'[:2000],
      'traceback': traceback.format_exc(limit=4)[-2000:],
    }
  result['wall_seconds'] = round(time.perf_counter() - start, 2)
  logging.info('%s: %s', name, result)
  return result


def _timings(fns: Sequence[Callable[[], object]], repeats: int) -> list[list[float]]:
  """Seconds of `repeats` runs of each fn, round-robin, after one warm-up (compile) each."""
  for fn in fns:
    jax.block_until_ready(fn())
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, fn_times in zip(fns, times):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      fn_times.append(time.perf_counter() - start)
  return times


def memory_report(compiled) -> dict:
  """Bytes of XLA's memory analysis; the peak is arguments + outputs + temporaries - aliases."""
  analysis = compiled.memory_analysis()
  fields = (
    'argument_size_in_bytes',
    'output_size_in_bytes',
    'temp_size_in_bytes',
    'alias_size_in_bytes',
    'generated_code_size_in_bytes',
  )
  report = {f: int(getattr(analysis, f)) for f in fields}
  report['peak_bytes'] = (
    report['argument_size_in_bytes']
    + report['output_size_in_bytes']
    + report['temp_size_in_bytes']
    - report['alias_size_in_bytes']
  )
  report['peak_gib'] = round(report['peak_bytes'] / 2**30, 3)
  return report


def check_train_step(
  sizes: dict,
  steps: int,
  bindings: Sequence[str],
  peak: float | None,
  out: dict,
  trained: dict,
  remat: str = _REMAT,
  attention: str | None = None,
) -> dict:
  """Compiles the step once (ahead of time: its memory report), then times `steps` steps.

  Puts the memory report into `out['memory']` and, unless `trained` already holds them, the
  config and trained parameters into `trained` (decoding runs on them).
  """
  setup = train_step_lib.make_step(
    sizes['model'],
    sizes['batch_size'],
    sizes['sequence_length'],
    sizes['dtype'],
    remat,
    num_embeddings=sizes['num_embeddings'],
    bindings=(*bindings, f'ModelConfig.attention_impl = {attention!r}'),
  )
  with jax.set_mesh(setup.mesh):
    start = time.perf_counter()
    compiled = setup.step.lower(setup.state, setup.batch).compile()
    compile_seconds = time.perf_counter() - start
    out['memory'] = _guarded('memory', lambda: memory_report(compiled))
    state, metrics = compiled(setup.state, setup.batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, setup.batch)
    jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / steps
  tokens = sizes['batch_size'] * sizes['sequence_length']
  flops = setup.config.flops_per_token(sizes['sequence_length']) * tokens / seconds
  matmul = train_step_lib.matmul_flops_per_sec(sizes['matmul_size'], dtype=sizes['dtype'])
  loss = float(metrics['loss'])
  if not trained:
    trained.update(config=setup.config, params=state['params'])
  return {
    'model': sizes['model'],
    'dtype': sizes['dtype'],
    'remat_policy': remat,
    'attention_impl': attention or 'xla',
    'batch_size': sizes['batch_size'],
    'sequence_length': sizes['sequence_length'],
    'params': int(sum(x.size for x in jax.tree.leaves(state['params']))),
    'compile_seconds': round(compile_seconds, 2),
    'seconds_per_step': seconds,
    'tokens_per_sec': tokens / seconds,
    'model_flops_per_sec': flops,
    'peak_flops_per_sec': peak,
    'mfu': flops / peak if peak else None,
    'matmul_flops_per_sec': matmul,
    'fraction_of_matmul': flops / matmul,
    'loss_finite': bool(np.isfinite(loss)),
  }


def check_attention(config, batch: int, length: int, repeats: int) -> dict:
  """Causal attention forward + backward, XLA against cuDNN, at the model's shapes."""
  shape = (batch, length, config.num_heads, config.head_dim)
  keys = jax.random.split(jax.random.key(1), 3)
  q, k, v = (jax.random.normal(key, shape, config.dtype) for key in keys)
  result = {'shape': list(shape), 'dtype': str(config.dtype)}

  def make(impl):
    def loss(q, k, v):
      out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
      return jnp.sum(out.astype(jnp.float32)), out

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    return lambda: grad(q, k, v)

  runs, outputs = {}, {}
  for impl in ('xla', 'cudnn'):
    try:
      run = make(impl)
      (_, outputs[impl]), _ = run()
      runs[impl] = run
    except Exception as e:  # pylint: disable=broad-except
      result[impl] = {'error': f'{type(e).__name__}: {e}'[:500]}
  times = _timings(list(runs.values()), repeats)
  for impl, t in zip(runs, times):
    result[impl] = {'median_ms': 1e3 * statistics.median(t), 'best_ms': 1e3 * min(t)}
  if len(runs) == 2:
    result['cudnn_speedup'] = result['xla']['median_ms'] / result['cudnn']['median_ms']
    result['max_abs_difference'] = float(
      jnp.max(jnp.abs(outputs['xla'].astype(jnp.float32) - outputs['cudnn'].astype(jnp.float32)))
    )
  return result


def check_decode(
  params, config, batch: int, prefix_len: int, decode_len: int, repeats: int
) -> dict:
  """Greedy decoding of `decode_len` tokens after prefix + M pauses; EOS never stops it."""
  vocab = config.num_embeddings - 1  # the last row plays the pause
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, vocab, (batch, prefix_len)).astype(np.int32)

  def make(pauses):
    prefixes = jnp.asarray(np.pad(tokens, ((0, 0), (0, pauses)), constant_values=vocab))
    lengths = jnp.full((batch,), prefix_len + pauses, jnp.int32)
    return lambda: decoding.generate(
      params,
      config,
      prefixes,
      lengths,
      max_decode_len=decode_len,
      prefix_lm=True,
      eos_id=config.num_embeddings,
      vocab_limit=vocab,
    )

  times = _timings([make(m) for m in _PAUSES], repeats)
  medians = [statistics.median(t) for t in times]
  result = {'batch_size': batch, 'prefix_len': prefix_len, 'decode_len': decode_len}
  for m, t, median in zip(_PAUSES, times, medians):
    result[f'M={m}'] = {
      'median_ms': 1e3 * median,
      'best_ms': 1e3 * min(t),
      'ms_per_token': 1e3 * median / decode_len,
      'ratio_to_M=0': median / medians[0],
    }
  return result


def run_check(
  tiny: bool,
  steps: int,
  repeats: int,
  prefix_len: int,
  decode_len: int,
  decode_batch: int,
  peak_tflops: float | None,
  save: Callable[[dict], None] = lambda out: None,
  batch_size: int | None = None,
  variants: Sequence[str] | None = None,
) -> dict:
  """All parts, in one dict ready for JSON; `save` gets it after each part."""
  sizes = dict(TINY if tiny else FULL)
  if batch_size:
    sizes['batch_size'] = batch_size
  device = jax.devices()[0]
  peak = train_state.peak_flops(peak_tflops * 1e12 if peak_tflops else None)
  out = {
    'device_kind': device.device_kind,
    'platform': device.platform,
    'device_count': jax.device_count(),
    'jax_version': jax.__version__,
    'tiny': tiny,
    'train_step': {},
  }
  trained = {}
  for name, remat, attention in STEP_VARIANTS:
    if variants and name not in variants:
      continue
    part = {}
    part.update(
      _guarded(
        name,
        functools.partial(
          check_train_step,
          sizes,
          steps,
          _TINY_BINDINGS if tiny else (),
          peak,
          part,
          trained,
          remat,
          attention,
        ),
      )
    )
    out['train_step'][name] = part
    save(out)
  if not trained:
    return out
  config, params = trained['config'], trained['params']
  out['attention'] = _guarded(
    'attention',
    lambda: check_attention(config, sizes['batch_size'], sizes['sequence_length'], repeats),
  )
  save(out)
  out['decode'] = _guarded(
    'decode', lambda: check_decode(params, config, decode_batch, prefix_len, decode_len, repeats)
  )
  save(out)
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  tiny = _TINY.value

  def save(out):
    with open(_OUTPUT.value, 'w') as f:
      json.dump(out, f, indent=2, sort_keys=True)

  result = run_check(
    tiny,
    _CHECK_STEPS.value if not tiny else min(_CHECK_STEPS.value, 2),
    _CHECK_REPEATS.value if not tiny else min(_CHECK_REPEATS.value, 2),
    _PREFIX.value if not tiny else 16,
    _DECODE_LEN.value if not tiny else 4,
    _DECODE_BATCH.value,
    train_step_lib._PEAK_TFLOPS.value,  # pylint: disable=protected-access
    save,
    None if tiny else _BATCH.value,
    _VARIANTS.value,
  )
  print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == '__main__':
  app.run(main)
