"""AdamW with warmup, global-norm clipping, a weight-decay mask, microbatching.

Everything here is optax; this module only chooses the pieces and names the
gin knobs. Weight decay skips biases, LayerNorm parameters and embedding tables
by default (GPT-2/GPT-3 practice): decaying a LayerNorm scale pulls it towards
zero rather than towards "no change", and decaying embedding rows penalises
rare tokens, the `<pause>` row among them, for being rare.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import gin
import jax
import jax.numpy as jnp
import optax

from pause_lm.runtime import gin_utils

SCHEDULES = ('cosine', 'rsqrt', 'constant')


class Optimizer(NamedTuple):
  """The update rule and its schedule, kept together so the trainer can log the rate."""

  transform: optax.GradientTransformation
  schedule: optax.Schedule


@gin.configurable
def learning_rate_schedule(
  learning_rate: float = gin.REQUIRED,
  warmup_steps: int = 0,
  total_steps: int | None = None,
  kind: str = 'cosine',
  end_ratio: float = 0.1,
) -> optax.Schedule:
  """Linear warmup from 0, then cosine decay, rsqrt decay, or constant.

  Args:
    learning_rate: Peak learning rate, reached at the end of warmup.
    warmup_steps: Steps of linear warmup.
    total_steps: Where the cosine decay ends (warmup included); the rate stays
      at `end_ratio * learning_rate` after it. Only used by 'cosine'.
    kind: 'cosine', 'rsqrt' (peak * sqrt(warmup_steps / step) after warmup) or
      'constant'.
    end_ratio: Final rate of the cosine schedule, as a fraction of the peak.

  Returns:
    A function from step to learning rate.
  """
  if kind not in SCHEDULES:
    raise ValueError(f'learning_rate_schedule.kind={kind!r}; use one of {SCHEDULES}.')
  # gin builds the schedule before `train` checks its own settings, so name the macro here.
  for macro, name, value in (
    ('WARMUP_STEPS', 'warmup_steps', warmup_steps),
    ('TRAIN_STEPS', 'total_steps', total_steps),
  ):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
      raise gin_utils.SettingValueError(
        f'{macro}={value!r} (learning_rate_schedule.{name}) must be an integer; set it '
        f'with --gin.{macro}=<int>, e.g. --gin.{macro}=100 (no quotes).'
      )
  if kind == 'cosine':
    if total_steps is None or total_steps <= warmup_steps:
      raise ValueError(
        f'The cosine schedule needs total_steps ({total_steps}) larger than '
        f'warmup_steps ({warmup_steps}); bind '
        'learning_rate_schedule.total_steps (usually %TRAIN_STEPS).'
      )
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=learning_rate,
      warmup_steps=warmup_steps,
      decay_steps=total_steps,
      end_value=learning_rate * end_ratio,
    )
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  if kind == 'constant':
    after = optax.constant_schedule(learning_rate)
  else:

    def after(step):
      # `step` counts from the end of warmup (join_schedules offsets it).
      return learning_rate * jnp.sqrt(max(warmup_steps, 1) / (step + max(warmup_steps, 1)))

  return optax.join_schedules([warmup, after], [warmup_steps])


def weight_decay_mask(
  params: Any,
  *,
  decay_biases: bool = False,
  decay_norms: bool = False,
  decay_embeddings: bool = False,
) -> Any:
  """True for parameters that weight decay applies to.

  Parameters are told apart by flax's names: `embedding` (nn.Embed tables),
  anything under a module whose name contains 'norm' (LayerNorm scale/bias),
  and `bias`. Everything else (dense kernels) is decayed.

  Args:
    params: The parameter tree (arrays or shape structs).
    decay_biases: Decay projection biases too.
    decay_norms: Decay LayerNorm scales and biases too.
    decay_embeddings: Decay embedding tables too.

  Returns:
    A tree of booleans with the structure of `params`.
  """

  def decide(path, _):
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    leaf, modules = names[-1], names[:-1]
    if any('norm' in m.lower() for m in modules):
      return decay_norms
    if leaf == 'embedding':
      return decay_embeddings
    if leaf == 'bias':
      return decay_biases
    return True

  return jax.tree_util.tree_map_with_path(decide, params)


@gin.configurable
def create_optimizer(
  learning_rate_fn: optax.Schedule = gin.REQUIRED,
  b1: float = 0.9,
  b2: float = 0.95,
  eps: float = 1e-8,
  weight_decay: float = 0.1,
  clip_norm: float | None = 1.0,
  decay_biases: bool = False,
  decay_norms: bool = False,
  decay_embeddings: bool = False,
) -> Optimizer:
  """AdamW behind global-norm clipping, with its schedule.

  Args:
    learning_rate_fn: The schedule, e.g. `create_optimizer.learning_rate_fn =
      @learning_rate_schedule()` in a run file.
    b1: Adam's first-moment decay.
    b2: Adam's second-moment decay (0.95 as in GPT-3 and most LM recipes).
    eps: Adam's epsilon.
    weight_decay: Decoupled weight decay, multiplied by the learning rate.
    clip_norm: Global gradient norm to clip to; None or 0 disables clipping.
    decay_biases: See `weight_decay_mask`.
    decay_norms: See `weight_decay_mask`.
    decay_embeddings: See `weight_decay_mask`.

  Returns:
    (transform, schedule); the schedule is returned for logging.
  """
  schedule = learning_rate_fn

  def mask(params):
    return weight_decay_mask(
      params, decay_biases=decay_biases, decay_norms=decay_norms, decay_embeddings=decay_embeddings
    )

  adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
  if not clip_norm:
    return Optimizer(adamw, schedule)
  return Optimizer(optax.chain(optax.clip_by_global_norm(clip_norm), adamw), schedule)


GradFn = Callable[
  [Any, Mapping[str, jax.Array], jax.Array], tuple[tuple[jax.Array, dict[str, jax.Array]], Any]
]


def accumulate_gradients(
  grad_fn: GradFn,
  params: Any,
  batch: Mapping[str, jax.Array],
  rng: jax.Array,
  num_microbatches: int,
  constrain: Callable[[Mapping[str, jax.Array]], Any] = lambda b: b,
) -> tuple[tuple[jax.Array, dict[str, jax.Array]], Any]:
  """Sums `grad_fn` outputs over microbatches, to fit big batches in memory.

  `grad_fn(params, batch, rng)` must return sums (not means) over the batch,
  so the total equals one pass over the whole batch up to float rounding.
  Microbatch j takes rows j, j + k, j + 2k, ... : every device keeps its own
  rows, so splitting needs no communication.

  Args:
    grad_fn: Returns ((summed loss, dict of summed metrics), gradients).
    params: Parameters to differentiate.
    batch: The whole batch; leading dimension divisible by num_microbatches.
    rng: Dropout key; microbatch j uses fold_in(rng, j).
    num_microbatches: k; 1 runs `grad_fn` once.
    constrain: Applied to each microbatch, e.g. to pin its sharding.

  Returns:
    The summed ((loss, metrics), gradients).
  """
  if num_microbatches == 1:
    return grad_fn(params, batch, rng)

  def split(x):
    x = x.reshape((x.shape[0] // num_microbatches, num_microbatches) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  microbatches = jax.tree.map(split, dict(batch))

  def body(carry, inputs):
    index, microbatch = inputs
    out = grad_fn(params, constrain(microbatch), jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, out), None

  out_shape = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], microbatches), rng)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
  total, _ = jax.lax.scan(body, zeros, (jnp.arange(num_microbatches), microbatches))
  return total
