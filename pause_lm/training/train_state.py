"""The train state and its step, shared by training, the AOT check and the benchmarks.

One module owns the abstract state and its shardings and the jitted step, so the step the
benchmarks time is the step `trainer.train` runs (the model's sizing, which evaluation and the
commands share too, is pause_lm.model.sizing). It imports no input pipeline
(TensorFlow, SeqIO), so an accelerator check needs only JAX, Flax, Optax and gin.
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pause_lm.model import sizing
from pause_lm.training import optimizer as optimizer_lib
from pause_lm.runtime import sharding

State = dict[str, Any]  # {'step': int32 scalar, 'params': ..., 'opt_state': ...}
Batch = Mapping[str, jax.Array]

# Features the model reads; targets and weights are read by the loss.
MODEL_FEATURES = (
  'decoder_input_tokens',
  'decoder_positions',
  'decoder_segment_ids',
  'decoder_causal_attention',
)
REQUIRED_FEATURES = ('decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights')

# Dense bfloat16 peak FLOP/s per chip, by a substring of `device_kind`; used
# for MFU when `peak_flops_per_device` is not set. Unknown kinds (e.g. CPUs)
# report no MFU.
PEAK_FLOPS_BY_DEVICE_KIND = (
  ('TPU v4', 275e12),
  ('TPU v5 lite', 197e12),
  ('TPU v5e', 197e12),
  ('TPU v5p', 459e12),
  ('TPU v6', 918e12),
  ('H100', 989e12),
  ('H200', 989e12),
  ('A100', 312e12),
)


def loss_sums(
  logits: jax.Array, batch: Batch, pause_id: int, z_loss: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Summed (not averaged) loss terms over loss-weighted targets.

  Sums let microbatches and data shards add up exactly; the caller divides by
  the total weight once. Targets equal to `pause_id` get zero weight here as
  well as in the data, so a pipeline bug cannot make the model learn to
  predict pauses.

  Args:
    logits: float32 [batch, length, vocab].
    batch: Needs decoder_target_tokens and decoder_loss_weights.
    pause_id: Id of `<pause>`.
    z_loss: Coefficient of the log-partition penalty (PaLM's z-loss).

  Returns:
    (objective to differentiate, dict of sums for metrics).
  """
  targets = batch['decoder_target_tokens']
  weights = (batch['decoder_loss_weights'] * (targets != pause_id)).astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  cross_entropy = jnp.sum((log_z - target_logit) * weights)
  z_term = jnp.sum(jnp.square(log_z) * weights)
  correct = jnp.sum((target_logit >= jnp.max(logits, axis=-1)) * weights)
  sums = {
    'cross_entropy': cross_entropy,
    'z_loss': z_term,
    'correct': correct,
    'weight': jnp.sum(weights),
  }
  return cross_entropy + z_loss * z_term, sums


def make_train_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  rules: sharding.LogicalRules,
  *,
  pause_id: int,
  dropout_seed: int,
  z_loss: float = 0.0,
  num_microbatches: int = 1,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
  """Returns the (un-jitted) train step: state, batch -> new state, metrics."""
  deterministic = model.config.dropout_rate == 0.0

  def grad_fn(params, batch, rng):
    def objective(p):
      # The rules turn the model's activation names (batch, length, embed,
      # heads, mlp, vocab) into sharding constraints on the current mesh.
      with nn.logical_axis_rules(rules):
        logits = model.apply(
          {'params': p},
          *(batch.get(k) for k in MODEL_FEATURES),
          deterministic=deterministic,
          rngs={'dropout': rng},
        )
      return loss_sums(logits, batch, pause_id, z_loss)

    return jax.value_and_grad(objective, has_aux=True)(params)

  # Inputs and outputs of the step carry explicit shardings; activations
  # inside are pinned by the model's logical constraints. Microbatches are
  # pinned to the batch sharding so the scan over them never gathers a batch.
  def constrain(batch):
    with nn.logical_axis_rules(rules):
      return {
        k: nn.with_logical_constraint(v, ('activation_batch', 'activation_length'))
        for k, v in batch.items()
      }

  def train_step(state: State, batch: Batch):
    rng = jax.random.fold_in(jax.random.key(dropout_seed), state['step'])
    (_, sums), grads = optimizer_lib.accumulate_gradients(
      grad_fn, state['params'], batch, rng, num_microbatches, constrain
    )
    denominator = jnp.maximum(sums['weight'], 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    targets = batch['decoder_target_tokens']
    metrics = {
      'loss': sums['cross_entropy'] / denominator,
      # A percentage, as every accuracy pause-lm reports (t5's evaluation metrics are).
      'token_accuracy': 100.0 * sums['correct'] / denominator,
      'weighted_tokens': sums['weight'],
      # Real (non-padding) positions only; padding targets are 0.
      'pause_share': jnp.sum(batch['decoder_input_tokens'] == pause_id)
      / jnp.maximum(jnp.sum(targets > 0), 1),
      'grad_norm': optax.global_norm(grads),
      'learning_rate': schedule(state['step']),
    }
    if z_loss:
      metrics['z_loss'] = sums['z_loss'] / denominator
    new_state = {'step': state['step'] + 1, 'params': params, 'opt_state': opt_state}
    return new_state, metrics

  return train_step


def abstract_state_and_shardings(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  mesh: jax.sharding.Mesh,
  rules: sharding.LogicalRules,
) -> tuple[Callable[[jax.Array], State], State, State]:
  """Shapes and shardings of the train state, without allocating it.

  Parameter shardings come from the model's logical axis names; optimizer
  moments mirror their parameter's sharding and scalars are replicated.

  Returns:
    (init function from a key to an unboxed state, abstract state, shardings).
  """
  dummy = jnp.zeros((1, 1), jnp.int32)

  def init(rng):
    params = nn.unbox(model.init(rng, dummy)['params'])
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': optimizer.init(params)}

  _, param_shardings = sizing.sharded_abstract_params(model, mesh, rules)
  abstract = jax.eval_shape(init, jax.random.key(0))
  replicated = sharding.replicated(mesh)
  opt_shardings = optax.tree_map_params(
    optimizer,
    lambda _, s: s,
    abstract['opt_state'],
    param_shardings,
    transform_non_params=lambda _: replicated,
    is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
  )
  shardings = {'step': replicated, 'params': param_shardings, 'opt_state': opt_shardings}
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  return init, abstract, shardings


def peak_flops(configured: float | None) -> float | None:
  if configured:
    return configured
  kind = jax.devices()[0].device_kind
  for name, flops in PEAK_FLOPS_BY_DEVICE_KIND:
    if name in kind:
      return flops
  return None


def jit_train_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  rules: sharding.LogicalRules,
  mesh: jax.sharding.Mesh,
  state_shardings: State,
  **step_kwargs,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
  """`make_train_step`, jitted with the state's shardings and the state donated."""
  return jax.jit(
    make_train_step(model, optimizer, schedule, rules, **step_kwargs),
    in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
