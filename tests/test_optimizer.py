"""Schedules, the weight-decay mask, and microbatched gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pause_lm.model import transformer as model_lib
from pause_lm.training import optimizer


def _model_params():
  config = model_lib.ModelConfig(
    num_embeddings=128, num_layers=1, num_heads=2, emb_dim=16, mlp_dim=32, max_len=16
  )
  variables = jax.eval_shape(
    model_lib.Decoder(config).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32)
  )
  return variables['params']


def _flat(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_weight_decay_skips_biases_norms_and_embeddings_by_default():
  mask = _flat(optimizer.weight_decay_mask(nn.unbox(_model_params())))
  decayed = sorted(k for k, v in mask.items() if v)
  assert decayed and all(k.endswith("['kernel']") for k in decayed)
  assert not any(
    v for k, v in mask.items() if 'embedding' in k or 'norm' in k or k.endswith("['bias']")
  )
  assert any(k.startswith("['logits']") for k in decayed)


def test_weight_decay_options_add_each_group():
  params = nn.unbox(_model_params())
  mask = _flat(
    optimizer.weight_decay_mask(params, decay_biases=True, decay_norms=True, decay_embeddings=True)
  )
  assert all(mask.values())


def test_cosine_schedule_warms_up_then_decays_to_the_end_ratio():
  schedule = optimizer.learning_rate_schedule(
    learning_rate=1.0, warmup_steps=10, total_steps=110, end_ratio=0.1
  )
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.55)
  assert float(schedule(110)) == pytest.approx(0.1)
  assert float(schedule(500)) == pytest.approx(0.1)


def test_rsqrt_schedule_halves_at_four_times_warmup():
  schedule = optimizer.learning_rate_schedule(learning_rate=1.0, warmup_steps=10, kind='rsqrt')
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(40)) == pytest.approx(0.5)


def test_bad_schedule_settings_say_what_to_bind():
  with pytest.raises(ValueError, match='total_steps'):
    optimizer.learning_rate_schedule(learning_rate=1.0, warmup_steps=10)
  with pytest.raises(ValueError, match='kind'):
    optimizer.learning_rate_schedule(learning_rate=1.0, kind='linear')


def test_decay_applies_only_where_the_mask_says():
  params = {
    'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
    'embed': {'embedding': jnp.ones((3, 2))},
  }
  tx, _ = optimizer.create_optimizer(
    learning_rate_fn=lambda step: 0.1, weight_decay=0.5, clip_norm=1.0
  )
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['kernel'], -0.05)
  np.testing.assert_array_equal(updates['dense']['bias'], 0.0)
  np.testing.assert_array_equal(updates['embed']['embedding'], 0.0)


def test_microbatches_sum_to_the_full_batch_gradient():
  w = jax.random.normal(jax.random.key(0), (4, 3))
  batch = {'x': jax.random.normal(jax.random.key(1), (8, 4))}

  def grad_fn(params, b, rng):
    del rng

    def loss(p):
      total = jnp.sum(jnp.tanh(b['x'] @ p) ** 2)
      return total, {'rows': jnp.float32(b['x'].shape[0])}

    return jax.value_and_grad(loss, has_aux=True)(params)

  (full, aux), grads = optimizer.accumulate_gradients(grad_fn, w, batch, jax.random.key(2), 1)
  (micro, micro_aux), micro_grads = optimizer.accumulate_gradients(
    grad_fn, w, batch, jax.random.key(2), 4
  )
  np.testing.assert_allclose(micro, full, rtol=1e-5)
  np.testing.assert_allclose(micro_grads, grads, rtol=1e-5)
  assert float(micro_aux['rows']) == float(aux['rows']) == 8.0
