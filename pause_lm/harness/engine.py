"""Runs token rows through the model: scoring and KV-cache generation in fixed shapes.

Every call has a fixed batch size (short batches are padded with zero rows) and one of a few
fixed widths (`requests.buckets`), so a run compiles one program per bucket and request type,
and a row's result never depends on which rows share its batch. Batches are split over the
mesh's batch axes (data x fsdp, `runtime.sharding`), the parameters stay as they were sharded.
Rows are run widest first (an out-of-memory shows at once) and returned in request order.
"""

from collections.abc import Sequence
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from pause_lm.harness import requests as requests_lib
from pause_lm.model import decoding
from pause_lm.model.transformer import Decoder, ModelConfig
from pause_lm.runtime import sharding as sharding_lib

_NEG_INF = -1e30


@functools.partial(jax.jit, static_argnames=('config', 'vocab_limit'))
def score_batch(params, config: ModelConfig, batch, vocab_limit: int):
  """(summed log-likelihood of the weighted targets, whether each is the greedy choice) per row.

  The log-likelihood is `decoding.score`'s (a softmax over every embedding row, as in the
  training loss); the greedy check ignores ids >= vocab_limit (the pause and padding rows),
  which generation never produces.
  """
  logits = Decoder(config).apply(
    {'params': params},
    batch['decoder_input_tokens'],
    decoder_causal_attention=batch.get('decoder_causal_attention'),
  )
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  targets = batch['decoder_target_tokens']
  target_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = batch['decoder_loss_weights'].astype(jnp.float32)
  allowed = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, _NEG_INF)
  greedy = (jnp.argmax(allowed, axis=-1) == targets) | (weights == 0)
  return jnp.sum(target_log_probs * weights, axis=1), jnp.all(greedy, axis=1)


def compiled_programs() -> dict[str, int]:
  """How many programs the harness's jitted functions hold (compiles so far, per function)."""
  return {'score': score_batch._cache_size(), 'generate': decoding.generate._cache_size()}  # pylint: disable=protected-access


class Engine:
  """One model's parameters with the shapes they run in."""

  def __init__(
    self,
    params,
    config: ModelConfig,
    *,
    vocab_limit: int,
    eos_id: int,
    prefix_lm: bool,
    causal_pause_id: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    mesh: jax.sharding.Mesh | None = None,
    smallest_bucket: int = 32,
    progress: bool = True,
  ):
    self.params, self.config = params, config
    self.vocab_limit, self.eos_id, self.prefix_lm = vocab_limit, eos_id, prefix_lm
    # A delay-robust model's pauses are outside the prefix-LM block (decoding.generate).
    self.causal_pause_id = causal_pause_id
    self.max_length = min(max_length or config.max_len, config.max_len)
    self.requested_batch_size = max(int(batch_size), 1)
    self.use_mesh(mesh)
    self.smallest_bucket = smallest_bucket
    self.progress = progress

  def use_mesh(self, mesh: jax.sharding.Mesh | None) -> None:
    """Splits batches over `mesh`'s batch axes (None: one device, or as jit places them)."""
    self.mesh = mesh
    shards = sharding_lib.batch_shards(mesh) if mesh is not None else 1
    # A batch splits evenly over the batch shards: round up, the extra rows are padding.
    self.batch_size = -(-self.requested_batch_size // shards) * shards

  def use_params(self, params) -> None:
    """New parameters of the same model (a training run's, at each evaluation); batches follow
    the mesh they are sharded over."""
    self.params = params
    leaf = jax.tree.leaves(params)[0]
    sharding = getattr(leaf, 'sharding', None)
    mesh = getattr(sharding, 'mesh', None)
    if isinstance(mesh, jax.sharding.Mesh) and all(
      a in mesh.shape for a in sharding_lib.BATCH_AXES
    ):
      self.use_mesh(mesh)

  def _mesh(self):
    return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

  def _put(self, array: np.ndarray) -> jax.Array:
    if self.mesh is None:
      return jnp.asarray(array)
    # Every process holds the whole batch (lm-eval gives each the same requests).
    sharding = sharding_lib.batch_sharding(self.mesh)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

  def _batches(self, widths: Sequence[int], buckets: Sequence[int], desc: str):
    """(bucket width, request indices) of each batch: widest bucket first, full batches."""
    order = sorted(range(len(widths)), key=lambda i: (-widths[i], i))
    groups: dict[int, list[int]] = {}
    for i in order:
      groups.setdefault(requests_lib.bucket_of(widths[i], buckets), []).append(i)
    batches = [
      (width, indices[start : start + self.batch_size])
      for width, indices in groups.items()
      for start in range(0, len(indices), self.batch_size)
    ]
    return tqdm.tqdm(
      batches, desc=desc, unit='batch', disable=not self.progress or not batches, mininterval=2.0
    )

  def score(
    self,
    rows: Sequence[requests_lib.Row],
    desc: str = 'loglikelihood',
    prefix_lm: bool | None = None,
  ):
    """[(log-likelihood, is greedy)] of each row's continuation, in the rows' order; prefix_lm
    None is the model's own (perplexity rows are causal: `prefix_lm=False`)."""
    prefix_lm = self.prefix_lm if prefix_lm is None else prefix_lm
    buckets = requests_lib.buckets(self.max_length, self.smallest_bucket)
    results: list[tuple[float, bool] | None] = [None] * len(rows)
    with self._mesh():
      for width, indices in self._batches([r.width for r in rows], buckets, desc):
        features = requests_lib.score_features(
          [rows[i] for i in indices], width, self.batch_size, prefix_lm
        )
        if prefix_lm and self.causal_pause_id is not None:
          not_pause = features['decoder_input_tokens'] != self.causal_pause_id
          features['decoder_causal_attention'] = features['decoder_causal_attention'] * not_pause
        sums, greedy = score_batch(
          self.params,
          self.config,
          {k: self._put(v) for k, v in features.items()},
          vocab_limit=self.vocab_limit,
        )
        sums, greedy = np.asarray(jax.device_get(sums)), np.asarray(jax.device_get(greedy))
        for r, i in enumerate(indices):
          results[i] = (float(sums[r]), bool(greedy[r]))
    return results

  def generate(
    self,
    prefixes: Sequence[Sequence[int]],
    *,
    max_gen_toks: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    desc: str = 'generate_until',
  ) -> list[list[int]]:
    """Tokens decoded after each prefix (pauses included), up to EOS (left out) or
    max_gen_toks, with `decoding.generate`'s KV cache."""
    room = self.max_length - max_gen_toks
    if room < 1:
      raise requests_lib.RowTooLongError(
        f'max_gen_toks={max_gen_toks} leaves no room for a prefix in max_length='
        f'{self.max_length}; lower max_gen_toks.'
      )
    buckets = requests_lib.buckets(room, min(self.smallest_bucket, room))
    results: list[list[int] | None] = [None] * len(prefixes)
    rng = jax.random.key(seed)
    with self._mesh():
      for b, (width, indices) in enumerate(
        self._batches([max(len(p), 1) for p in prefixes], buckets, desc)
      ):
        tokens = np.zeros((self.batch_size, width), np.int32)
        lengths = np.zeros((self.batch_size,), np.int32)
        for r, i in enumerate(indices):
          tokens[r, : len(prefixes[i])] = prefixes[i]
          lengths[r] = len(prefixes[i])
        out = decoding.generate(
          self.params,
          self.config,
          self._put(tokens),
          self._put(lengths),
          max_decode_len=max_gen_toks,
          prefix_lm=self.prefix_lm,
          eos_id=self.eos_id,
          vocab_limit=self.vocab_limit,
          causal_pause_id=self.causal_pause_id if self.prefix_lm else None,
          temperature=float(temperature),
          top_k=int(top_k),
          rng=jax.random.fold_in(rng, b) if temperature > 0 else None,
        )
        generated = np.asarray(jax.device_get(out.tokens))
        for r, i in enumerate(indices):
          row = generated[r].tolist()
          results[i] = row[: row.index(self.eos_id)] if self.eos_id in row else row
    return results
