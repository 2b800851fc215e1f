"""KV-cache generation and continuation scoring that match the training forward pass exactly.

Pause inference appends M `<pause>` tokens to the prefix and ignores their outputs, so the pauses
belong to the prefix: they are processed in the one prefill pass (bidirectionally under prefix-LM,
as in finetuning) and cost one slightly longer prefill, never M decode steps.

The model sees what training shows it: `[0 (BOS), p_1 .. p_P, t_1, t_2, ...]` with
`decoder_causal_attention = 1` on the first P + 1 positions for prefix-LM. The logit at the
position whose input is p_P predicts t_1; each generated token is then fed at the next position.

Batches are right-padded, like training batches: every example keeps positions 0, 1, 2, ... so no
position offsets are needed, and the padding after a short prefix is overwritten in the KV cache
by that example's own generated tokens before it could ever be attended to (each example writes
and reads the cache at its own index). Left padding would instead need per-example position
offsets and a padding mask in every step.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pause_lm.model.transformer import Decoder, ModelConfig

_NEG_INF = -1e30  # finite, so that masked logits never turn a softmax into NaN


class Generation(NamedTuple):
  """What `generate` returns, whatever it was asked for, so callers read fields by name.

  tokens: int32 [batch, max_decode_len]; tokens after an example's EOS are 0.
  lengths: int32 [batch], tokens up to and including EOS (max_decode_len without one).
  logits: float32 [batch, max_decode_len, num_embeddings], the raw logits each token was chosen
    from (rows after an example's EOS are unspecified); None unless `return_logits`.
  """

  tokens: jax.Array
  lengths: jax.Array
  logits: jax.Array | None = None


def _choose(logits, rng, *, vocab_limit, temperature, top_k):
  """Picks one token per row from float32 logits [batch, vocab], never an id >= vocab_limit."""
  logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, _NEG_INF)
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k > 0:
    kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth_largest, logits, _NEG_INF)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(
  jax.jit,
  static_argnames=(
    'config',
    'max_decode_len',
    'prefix_lm',
    'eos_id',
    'vocab_limit',
    'temperature',
    'top_k',
    'return_logits',
    'causal_pause_id',
  ),
)
def generate(
  params,
  config: ModelConfig,
  prefixes,
  prefix_lengths,
  *,
  max_decode_len: int,
  prefix_lm: bool,
  eos_id: int,
  vocab_limit: int,
  temperature: float = 0.0,
  top_k: int = 0,
  rng=None,
  return_logits: bool = False,
  causal_pause_id: int | None = None,
) -> Generation:
  """Decodes up to `max_decode_len` tokens after each prefix, with a KV cache.

  Args:
    params: the Decoder's 'params' collection (boxed or unboxed).
    config: the ModelConfig the params were built for.
    prefixes: int32 [batch, P], right-padded prefix tokens *without* BOS (this function adds it),
      with the M pauses already appended by the data layer.
    prefix_lengths: int32 [batch], the real length of each prefix (pauses included).
    max_decode_len: tokens to generate at most; P + max_decode_len must be <= config.max_len.
    prefix_lm: attend bidirectionally over BOS + prefix, as prefix-LM finetuning does.
    eos_id: an example stops after emitting it; pass an id >= vocab_limit to never stop early.
    vocab_limit: ids >= this (the pause row, alignment padding rows) are never produced.
    temperature: 0 for greedy decoding, else the softmax temperature of sampling.
    top_k: when sampling, keep only the k most likely ids (0 keeps all).
    rng: PRNG key, required when temperature > 0.
    return_logits: also keep the raw float32 logits each token was chosen from (a
      [batch, max_decode_len, num_embeddings] buffer, so only when asked).
    causal_pause_id: with prefix_lm, the pause id of a model finetuned delay-robustly
      (random M): its pauses are outside the bidirectional block, as in its training rows
      (`feature_converters.outside_the_prefix_block`). None: every prefix position is inside.

  Returns:
    A `Generation`: tokens, lengths, and the logits when return_logits (else None).
  """
  prefix_width = prefixes.shape[1]
  cache_len = prefix_width + max_decode_len
  if cache_len > config.max_len:
    raise ValueError(
      f'prefix width {prefix_width} + max_decode_len {max_decode_len} exceeds '
      f'max_len {config.max_len}'
    )
  if temperature > 0.0 and rng is None:
    raise ValueError('sampling (temperature > 0) needs an rng')
  if rng is None:
    rng = jax.random.key(0)
  model = Decoder(config)
  choose = functools.partial(_choose, vocab_limit=vocab_limit, temperature=temperature, top_k=top_k)

  first_logits, cache = _prefill(
    model, params, prefixes, prefix_lengths, prefix_lm, cache_len, causal_pause_id
  )
  rng, step_rng = jax.random.split(rng)
  first_token = choose(first_logits, step_rng)
  tokens, all_logits = _decode_rest(
    model,
    params,
    cache,
    first_token,
    first_logits if return_logits else None,
    rng,
    prefix_lengths,
    choose=choose,
    max_decode_len=max_decode_len,
    eos_id=eos_id,
  )
  is_eos = tokens == eos_id
  lengths = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1) + 1, max_decode_len)
  return Generation(tokens, lengths.astype(jnp.int32), all_logits)


def _prefill(model, params, prefixes, prefix_lengths, prefix_lm, cache_len, causal_pause_id=None):
  """One pass over BOS + the prefixes (pauses included) that fills the KV cache.

  Returns:
    (float32 logits [batch, num_embeddings] of the first generated token, the cache).
  """
  batch, prefix_width = prefixes.shape
  inputs = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), prefixes.astype(jnp.int32)], 1)
  causal_attention = None
  if prefix_lm:
    causal_attention = jnp.arange(prefix_width + 1)[None, :] <= prefix_lengths[:, None]
    if causal_pause_id is not None:
      causal_attention &= inputs != causal_pause_id
  logits, variables = model.apply(
    {'params': params},
    inputs,
    decoder_causal_attention=causal_attention,
    cache_len=cache_len,
    logit_indices=prefix_lengths,
    method=Decoder.prefill,
    mutable=['cache'],
  )
  # The position holding p_P (index P, after BOS) predicts the first target token.
  return logits[:, 0], variables['cache']


def _decode_rest(
  model,
  params,
  cache,
  first_token,
  first_logits,
  rng,
  prefix_lengths,
  *,
  choose,
  max_decode_len,
  eos_id,
):
  """Feeds each chosen token back, one cached step at a time, until every row has hit EOS.

  Args:
    first_logits: the first token's logits when the caller wants every token's logits, else None.

  Returns:
    (tokens int32 [batch, max_decode_len], their logits or None).
  """
  batch = first_token.shape[0]
  tokens = jnp.zeros((batch, max_decode_len), jnp.int32).at[:, 0].set(first_token)
  all_logits = None
  if first_logits is not None:
    all_logits = jnp.zeros((batch, max_decode_len, first_logits.shape[-1]), jnp.float32)
    all_logits = all_logits.at[:, 0].set(first_logits)
  done = first_token == eos_id

  def cond(state):
    step, _, _, _, done, _, _ = state
    return (step < max_decode_len) & ~jnp.all(done)

  def body(state):
    step, cache, token, tokens, done, rng, all_logits = state
    # Generated token `step - 1` sits at position P + step (BOS occupies position 0).
    positions = (prefix_lengths + step)[:, None]
    logits, variables = model.apply(
      {'params': params, 'cache': cache},
      token[:, None],
      decoder_positions=positions,
      method=Decoder.decode_step,
      mutable=['cache'],
    )
    logits = logits[:, 0]
    rng, step_rng = jax.random.split(rng)
    next_token = jnp.where(done, 0, choose(logits, step_rng))
    tokens = tokens.at[:, step].set(next_token)
    if all_logits is not None:
      all_logits = all_logits.at[:, step].set(logits)
    done = done | (next_token == eos_id)
    return step + 1, variables['cache'], next_token, tokens, done, rng, all_logits

  state = (jnp.int32(1), cache, first_token, tokens, done, rng, all_logits)
  _, _, _, tokens, _, _, all_logits = jax.lax.while_loop(cond, body, state)
  return tokens, all_logits


@functools.partial(
  jax.jit, static_argnames=('config', 'prefix_lm', 'vocab_limit', 'causal_pause_id')
)
def score_after_prefix(
  params,
  config: ModelConfig,
  prefixes,
  prefix_lengths,
  continuations,
  continuation_lengths,
  owners,
  *,
  prefix_lm: bool,
  vocab_limit: int,
  causal_pause_id: int | None = None,
):
  """Scores candidate continuations that share prefixes, each prefix run once for all of them.

  A multiple-choice question's candidates follow one `context + M pauses`; nothing in the
  prefix attends to a continuation (causal or prefix-LM, the continuation is never in the
  bidirectional block), so the prefix's keys and values are the same for every candidate.
  They are computed once (the prefill of `generate`), copied to each candidate's row, and the
  candidate's tokens then run as one cached step that sees the prefix and its own earlier
  tokens: the same sums as `score` on the whole rows, up to float32 rounding, for a fraction
  of the prefill work (one prefill per question instead of one per candidate).

  Args:
    params: the Decoder's 'params' collection.
    config: its ModelConfig.
    prefixes: int32 [num_prefixes, P], right-padded prefixes (pauses included) *without* BOS.
    prefix_lengths: int32 [num_prefixes], each prefix's real length (>= 0).
    continuations: int32 [batch, C], right-padded candidate tokens (C >= 2).
    continuation_lengths: int32 [batch], each candidate's real length (0 for a padding row).
    owners: int32 [batch], the row of `prefixes` each candidate follows.
    prefix_lm: attend bidirectionally over BOS + prefix, as `generate` does.
    vocab_limit: ids >= this (the pause row, padding rows) are never a greedy choice.
    causal_pause_id: as in `generate`: a delay-robust model's pauses stay outside the block.

  Returns:
    (summed log-likelihood of each candidate [batch] float32, whether every one of its tokens
    is the greedy choice [batch] bool).
  """
  width = continuations.shape[1]
  if width < 2:
    raise ValueError(f'continuations need a width of at least 2, got {width}')
  model = Decoder(config)
  first_logits, cache = _prefill(
    model, params, prefixes, prefix_lengths, prefix_lm, prefixes.shape[1] + width, causal_pause_id
  )
  # Each candidate gets its prefix's cache rows (the batch axis follows the layer axis when
  # the layers are scanned).
  batch_axis = 1 if config.scan_layers else 0
  cache = jax.tree.map(lambda c: jnp.take(c, owners, axis=batch_axis), cache)
  # Candidate token j (after BOS and the prefix) sits at position length + 1 + j.
  positions = prefix_lengths[owners][:, None] + 1 + jnp.arange(width - 1)[None, :]
  logits, _ = model.apply(
    {'params': params, 'cache': cache},
    continuations[:, :-1],
    decoder_positions=positions,
    method=Decoder.decode_step,
    mutable=['cache'],
  )
  # The prefix's last position predicts the first candidate token; each token the next.
  logits = jnp.concatenate([first_logits[owners][:, None], logits], axis=1)
  weights = (jnp.arange(width)[None, :] < continuation_lengths[:, None]).astype(jnp.float32)
  return weighted_log_likelihood(logits, continuations, weights, vocab_limit)


def weighted_log_likelihood(logits, targets, weights, vocab_limit: int):
  """(summed weighted log-probability of `targets` per row, whether every weighted target is
  the greedy choice among ids < vocab_limit per row), from float32 logits [batch, T, vocab].

  The softmax runs over every embedding row, as in the training loss; the greedy check leaves
  out the pause and padding rows, which generation never produces. Unweighted positions
  count for nothing, whatever their logits hold (a padding position's may be anything).
  """
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  target_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  allowed = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, _NEG_INF)
  greedy = (jnp.argmax(allowed, axis=-1) == targets) | (weights == 0)
  sums = jnp.sum(jnp.where(weights > 0, target_log_probs * weights, 0.0), axis=1)
  return sums, jnp.all(greedy, axis=1)


@functools.partial(jax.jit, static_argnames=('config',))
def score(params, config: ModelConfig, batch):
  """Log-likelihood of the loss-weighted targets of a seqio prefix-LM (or LM) batch.

  Rank classification (PIQA, HellaSwag) compares these sums across candidate continuations of the
  same prefix + M pauses. The softmax runs over every embedding row, as in the training loss.

  Args:
    params: the Decoder's 'params' collection.
    config: its ModelConfig.
    batch: dict with 'decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights' and
      optionally 'decoder_causal_attention', 'decoder_positions', 'decoder_segment_ids'.

  Returns:
    (sum of weighted target log-probabilities [batch] float32, sum of weights [batch] float32).
  """
  logits = Decoder(config).apply(
    {'params': params},
    batch['decoder_input_tokens'],
    decoder_positions=batch.get('decoder_positions'),
    decoder_segment_ids=batch.get('decoder_segment_ids'),
    decoder_causal_attention=batch.get('decoder_causal_attention'),
  )
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  targets = batch['decoder_target_tokens']
  target_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = batch['decoder_loss_weights'].astype(jnp.float32)
  return jnp.sum(target_log_probs * weights, axis=1), jnp.sum(weights, axis=1)
