"""Delay-robust finetuning (random M, issue 26): what a training row teaches after k pauses
is exactly what inference with M_inf = k computes, and inference reads such a model as it was
finetuned (its pauses outside the prefix-LM block)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from pause_lm.data import feature_converters
from pause_lm.model import decoding
from pause_lm.model.transformer import Decoder, ModelConfig
from pause_lm.pipeline import datasets as data

P = 40  # the pause id (the last row but one of the table: the answer tokens are below it)
CONFIG = ModelConfig(
  num_embeddings=48, num_layers=2, num_heads=2, emb_dim=32, mlp_dim=64, max_len=32
)
PREFIX, ANSWER, M = [5, 9, 13], [21, 7, 1], 4


def _params():
  init = jax.jit(Decoder(CONFIG).init)(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))
  return jax.tree.map(lambda p: p * 10.0, init['params'])  # separated logits


def _training_row():
  converter = feature_converters.PausePrefixLMFeatureConverter(
    pause_id=P, pack=False, causal_pauses=True, answer_at_every_delay=True
  )
  example = {'inputs': PREFIX + [P] * M, 'targets': ANSWER}
  ds = tf.data.Dataset.from_tensors({k: tf.constant(v, tf.int32) for k, v in example.items()})
  (row,) = converter(ds, {'inputs': 10, 'targets': 4}).as_numpy_iterator()
  return row


@pytest.mark.parametrize('causal', [True, False])
def test_the_row_after_k_pauses_is_what_inference_reads_after_k_pauses(causal):
  params, row = _params(), _training_row()
  logits = Decoder(CONFIG).apply(
    {'params': params},
    jnp.asarray(row['decoder_input_tokens'][None]),
    decoder_causal_attention=jnp.asarray(row['decoder_causal_attention'][None]),
  )[0]
  taught = np.flatnonzero(row['decoder_target_tokens'] == ANSWER[0])
  assert len(taught) == M + 1
  np.testing.assert_allclose(row['decoder_loss_weights'][taught], [1] + [1 / M] * M, rtol=1e-6)
  matches = []
  for k, position in enumerate(taught):  # after k = 0..M pauses
    prefix = jnp.asarray([PREFIX + [P] * k + [0] * (M - k)], jnp.int32)
    first = decoding.generate(
      params,
      CONFIG,
      prefix,
      jnp.asarray([len(PREFIX) + k], jnp.int32),
      max_decode_len=1,
      prefix_lm=True,
      eos_id=1,
      vocab_limit=P,
      return_logits=True,
      causal_pause_id=P if causal else None,
    ).logits[0, 0]
    matches.append(bool(np.allclose(first, logits[position], atol=2e-4, rtol=1e-5)))
  if causal:
    assert all(matches)  # every delay's output is the one inference reads at that M
  else:
    # Read with the pauses inside the block (the paper's PauseFT rows), the prefix sees the
    # pauses after it, so the row's outputs after k < M pauses are not inference's at k.
    assert matches[0] and not all(matches)


@pytest.mark.parametrize(
  'name, expected',
  [
    ('squad_pause0to10', True),
    ('squad_pause2to5_prepend', False),
    ('squad_pause10', False),
    ('squad_std', False),
    ('squad_filler0to10', False),
    ('choice_pause0to10_eval', False),
    ('synthetic_pause_pretrain', False),
    (None, False),
  ],
)
def test_which_runs_are_delay_robust(name, expected):
  assert data.is_random_pause_variant(name) is expected
