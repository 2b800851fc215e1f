r"""Train-step throughput against this machine's own matmul rate.

  python benchmarks/train_step.py [--models=tiny,130m] [--steps=5]
  # The 1B model in bfloat16 on one GPU (H100 SXM: 989 dense bf16 TFLOP/s):
  python benchmarks/train_step.py --models=1b --dtype=bfloat16 \
      --remat_policy=dots_with_no_batch_dims_saveable --batch_size=8 \
      --sequence_length=2048 --matmul_size=8192 --peak_tflops=989

Prints, per model, tokens/s and model FLOP/s (the trainer's step, with the
model's training FLOPs per token) and that rate as a fraction of a large
matmul in the model's compute dtype measured in the same process: an MFU whose
peak is what XLA actually reaches on this machine, so CPU and accelerator
numbers compare. Each timed step is followed by --matmul_repeats reference
matmuls, and the fraction is the median over these rounds of step rate over
matmul rate, so a busy spell on a shared machine slows both sides of a ratio
instead of only one. With --peak_tflops (the chip's datasheet rate) the usual
MFU is printed too.
Inputs are random tokens, so the input pipeline is not measured.

Defaults are the fastest found on a 2-core CPU: batch 8 x 256 (same tokens
as 4 x 512 with half the attention work), float32, no remat. XLA_FLAGS
--xla_cpu_use_onednn=true changed nothing and --xla_cpu_use_xnnpack=true was
slower.
"""

from collections.abc import Callable, Sequence
import statistics
import time
from typing import Any, NamedTuple

from absl import app
from absl import flags
import gin
import jax
import jax.numpy as jnp
import numpy as np

from pause_lm.runtime import gin_utils
from pause_lm.model import transformer as model_lib
from pause_lm.training import optimizer as optimizer_lib
from pause_lm.runtime import sharding
from pause_lm.training import train_state

_MODELS = flags.DEFINE_list(
  'models', ['tiny', '130m'], 'Model gin files (gin/models/NAME.gin) to time.'
)
_STEPS = flags.DEFINE_integer(
  'steps', 3, 'Timed steps per model, each followed by the reference matmuls.'
)
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Sequences per step.')
_LENGTH = flags.DEFINE_integer('sequence_length', 256, 'Tokens per sequence.')
_MATMUL = flags.DEFINE_integer('matmul_size', 2048, 'n of the n x n x n reference matmul.')
_MATMUL_REPEATS = flags.DEFINE_integer(
  'matmul_repeats', 10, 'Reference matmuls timed together after each step.'
)
_DTYPE = flags.DEFINE_enum(
  'dtype',
  'float32',
  ['float32', 'bfloat16'],
  'Compute dtype of the models and the reference matmul. float32 on CPUs, which '
  'have no fast bfloat16 matmul; bfloat16 on GPUs and TPUs.',
)
_REMAT = flags.DEFINE_string(
  'remat_policy',
  'none',
  "ModelConfig.remat_policy (the model files' own is for "
  'their full batch; none is fastest where memory allows).',
)
_PEAK_TFLOPS = flags.DEFINE_float(
  'peak_tflops', None, "The chip's datasheet dense rate in --dtype, for the usual MFU."
)

# The paper's 130M/1B vocabulary: 32,296 tokenizer ids + 1 pause, padded.
NUM_EMBEDDINGS = 32384


class StepSetup(NamedTuple):
  """A model's jitted train step (the trainer's own), its first state and one batch."""

  config: model_lib.ModelConfig
  step: Any
  state: Any
  batch: Any
  mesh: Any


def make_step(
  model_name: str,
  batch_size: int,
  sequence_length: int,
  dtype: str = 'float32',
  remat_policy: str = 'none',
  num_embeddings: int = NUM_EMBEDDINGS,
  bindings: Sequence[str] = (),
) -> StepSetup:
  """`train_state.jit_train_step`, the trainer's own jitted step, for gin/models/NAME.gin.

  Constant learning rate 1e-4, AdamW with the optimizer module's defaults
  (b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1 on matrices, clipping at
  global norm 1). Inputs are random tokens.
  """
  gin.clear_config()
  gin_utils.parse_gin(
    [f'gin/models/{model_name}.gin'],
    [
      f'ModelConfig.num_embeddings = {num_embeddings}',
      f"ModelConfig.dtype = '{dtype}'",
      f"ModelConfig.remat_policy = '{remat_policy}'",
      f'ModelConfig.max_len = {max(sequence_length, 512)}',
      'learning_rate_schedule.learning_rate = 1e-4',
      "learning_rate_schedule.kind = 'constant'",
      *bindings,
    ],
  )
  config = model_lib.ModelConfig()
  model = model_lib.Decoder(config)
  mesh = sharding.create_mesh()
  rules = sharding.logical_axis_rules()
  optimizer, schedule = optimizer_lib.create_optimizer(
    learning_rate_fn=optimizer_lib.learning_rate_schedule()
  )
  init, _, shardings = train_state.abstract_state_and_shardings(model, optimizer, mesh, rules)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, num_embeddings - 1, (batch_size, sequence_length), dtype=np.int32)
  batch = sharding.make_global_batch(
    {
      'decoder_input_tokens': tokens,
      'decoder_target_tokens': np.roll(tokens, -1, axis=1),
      'decoder_loss_weights': np.ones_like(tokens),
    },
    mesh,
  )
  step = train_state.jit_train_step(
    model, optimizer, schedule, rules, mesh, shardings, pause_id=num_embeddings - 1, dropout_seed=0
  )
  return StepSetup(config, step, state, batch, mesh)


def matmul_round(n: int, repeats: int, dtype: str = 'float32') -> Callable[[], float]:
  """A function timing `repeats` back-to-back n x n x n matmuls; returns their FLOP/s."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()

  def run() -> float:
    start = time.perf_counter()
    for _ in range(repeats):
      out = dot(a, b)
    out.block_until_ready()
    return repeats * 2 * n**3 / (time.perf_counter() - start)

  return run


def matmul_flops_per_sec(n: int, repeats: int = 5, dtype: str = 'float32') -> float:
  """Best-of-`repeats` rate of one jitted n x n x n matmul in `dtype`."""
  run = matmul_round(n, 1, dtype)
  return max(run() for _ in range(repeats))


def time_train_step(
  model_name: str,
  batch_size: int,
  sequence_length: int,
  steps: int,
  dtype: str = 'float32',
  remat_policy: str = 'none',
  matmul_size: int = 2048,
  matmul_repeats: int = 10,
) -> dict[str, Any]:
  """The trainer's jitted step for one model file, each timed step followed by the matmuls."""
  setup = make_step(model_name, batch_size, sequence_length, dtype, remat_policy)
  matmul = matmul_round(matmul_size, matmul_repeats, dtype)
  state, step, batch = setup.state, setup.step, setup.batch
  tokens_per_step = batch_size * sequence_length
  flops_per_step = setup.config.flops_per_token(sequence_length) * tokens_per_step
  seconds, fractions, matmul_rates = [], [], []
  with jax.set_mesh(setup.mesh):
    state, metrics = step(state, batch)  # Compile.
    jax.block_until_ready(metrics)
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      seconds.append(time.perf_counter() - start)
      matmul_rates.append(matmul())
      fractions.append(flops_per_step / seconds[-1] / matmul_rates[-1])
  median = statistics.median(seconds)
  return {
    'params': sum(x.size for x in jax.tree.leaves(state['params'])),
    'seconds_per_step': median,
    'tokens_per_sec': tokens_per_step / median,
    'model_flops_per_sec': flops_per_step / median,
    'matmul_flops_per_sec': statistics.median(matmul_rates),
    'fraction_of_matmul': statistics.median(fractions),
    'fraction_range': (min(fractions), max(fractions)),
  }


def main(argv: Sequence[str]) -> None:
  del argv
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}')
  for name in _MODELS.value:
    result = time_train_step(
      name,
      _BATCH.value,
      _LENGTH.value,
      _STEPS.value,
      _DTYPE.value,
      _REMAT.value,
      _MATMUL.value,
      _MATMUL_REPEATS.value,
    )
    low, high = result['fraction_range']
    line = (
      f'{name:>5}: {result["params"] / 1e6:.1f}M params, {_DTYPE.value}, '
      f'remat {_REMAT.value}, batch {_BATCH.value} x {_LENGTH.value}: '
      f'{result["seconds_per_step"]:.3f} s/step, '
      f'{result["tokens_per_sec"]:.0f} tokens/s, '
      f'{result["model_flops_per_sec"] / 1e9:.1f} GFLOP/s; reference {_DTYPE.value} matmul '
      f'({_MATMUL.value}^3) {result["matmul_flops_per_sec"] / 1e9:.1f} GFLOP/s; '
      f'{result["fraction_of_matmul"]:.1%} of the matmul rate '
      f'(median of {_STEPS.value} rounds, {low:.1%}-{high:.1%})'
    )
    if _PEAK_TFLOPS.value:
      line += (
        f', MFU {result["model_flops_per_sec"] / (_PEAK_TFLOPS.value * 1e12):.1%} '
        f'of {_PEAK_TFLOPS.value:g} TFLOP/s'
      )
    print(line)


if __name__ == '__main__':
  app.run(main)
