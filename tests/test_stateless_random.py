"""NumPy's Philox stream against TensorFlow's stateless ops, bit for bit."""

import numpy as np
import pytest
import tensorflow as tf

from pause_lm.data import stateless_random

INT64 = np.iinfo(np.int64)
EDGE_SEEDS = [[0, 0], [-1, -1], [INT64.min, INT64.max], [1, 0], [0, 1], [2**32, 2**32 - 1]]


def _tf_stream(seed, count):
  return tf.random.stateless_uniform(
    [count], seed=tf.constant(seed, tf.int64), minval=None, maxval=None, dtype=tf.uint32
  ).numpy()


@pytest.mark.parametrize('count', [0, 1, 3, 4, 5, 26, 205])
def test_uniform_uint32_is_tensorflows_stream(count):
  seeds = np.concatenate(
    [
      np.array(EDGE_SEEDS, np.int64),
      np.random.default_rng(count).integers(INT64.min, INT64.max, (40, 2)),
    ]
  )
  ours = stateless_random.uniform_uint32(seeds, count)
  assert ours.shape == (len(seeds), count) and ours.dtype == np.uint32
  np.testing.assert_array_equal(ours, np.stack([_tf_stream(s, count) for s in seeds]))


def test_int32_draws_are_the_stream_modulo_the_range():
  # What insert_pauses_batch relies on to reproduce pause_gaps' tf.int32 draws.
  seed = [123, 7]
  draws = tf.random.stateless_uniform([300], seed=seed, minval=0, maxval=2049, dtype=tf.int32)
  np.testing.assert_array_equal(
    draws.numpy(), stateless_random.uniform_uint32(np.array([seed]), 300)[0] % 2049
  )
