"""Runs token rows through the model: scoring and KV-cache generation in fixed shapes.

Every call has a fixed batch size (short batches are padded with zero rows) and one of a few
fixed widths (`requests.buckets`), so a run compiles one program per bucket and request type,
and a row's result never depends on which rows share its batch. Batches are split over the
mesh's batch axes (data x fsdp, `runtime.sharding`), the parameters stay as they were sharded.
Rows are run widest first (an out-of-memory shows at once) and returned in request order.

Log-likelihood rows with the same prefix (`context + M pauses`: a multiple-choice question's
candidates) are scored after one prefill of that prefix, its KV cache shared by the candidates
(`decoding.score_after_prefix`); this is exact because no prefix position attends to a
continuation, and the sums equal whole-row scoring to float32 rounding. Rows whose prefix is
their own, and groups whose sharing would not save token positions (a short prefix before
long candidates), are scored whole. `share_prefixes=False` scores every row whole.
"""

from collections.abc import Sequence
import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from pause_lm.harness import requests as requests_lib
from pause_lm.model import decoding
from pause_lm.model.transformer import Decoder, ModelConfig
from pause_lm.runtime import sharding as sharding_lib


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
  return decoding.weighted_log_likelihood(
    logits, batch['decoder_target_tokens'], batch['decoder_loss_weights'], vocab_limit
  )


def compiled_programs() -> dict[str, int]:
  """How many programs the harness's jitted functions hold (compiles so far, per function)."""
  # pylint: disable=protected-access
  return {
    'score': score_batch._cache_size(),
    'score_shared': decoding.score_after_prefix._cache_size(),
    'generate': decoding.generate._cache_size(),
  }


# A batch of shared-prefix scoring holds `batch_size` prefixes and this many times as many
# candidates (a fixed shape: a row's result never depends on how many questions share its
# batch); questions are packed whole while they fit, a larger one is split (each part runs
# the prefix again).
CANDIDATES_PER_PREFIX = 4
SMALLEST_CONTINUATION_BUCKET = 8
# A shared-prefix batch costs about this much more per token position than whole rows (the
# cache copied to each candidate, the cached step's mask): 2.1 against 1.8 ms per position
# for the 130M decoder on a CPU.
SHARED_STEP_OVERHEAD = 1.2


@dataclasses.dataclass(frozen=True)
class SharedGroup:
  """Rows with one prefix (a multiple-choice question's candidates), scored after one prefill."""

  prefix: tuple[int, ...]
  members: tuple[int, ...]  # row indices


def shared_groups(
  rows: Sequence[requests_lib.Row], max_candidates: int
) -> tuple[list[SharedGroup], list[int]]:
  """(groups of >= 2 rows with the same prefix tokens, the other rows' indices).

  Rows share only identical prefixes: a context cut to fit max_length differently for two
  candidates, or a continuation that merged with the context's last token, makes prefixes
  that differ, and those rows are scored whole. Groups larger than `max_candidates` are split.
  """
  by_prefix: dict[tuple[int, ...], list[int]] = {}
  for i, row in enumerate(rows):
    by_prefix.setdefault(tuple(row.prefix), []).append(i)
  groups, alone = [], []
  for prefix, members in by_prefix.items():
    if len(members) < 2:
      alone.extend(members)
      continue
    for start in range(0, len(members), max_candidates):
      part = tuple(members[start : start + max_candidates])
      if len(part) < 2:
        alone.extend(part)
      else:
        groups.append(SharedGroup(prefix, part))
  return groups, sorted(alone)


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
    share_prefixes: bool = True,
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
    # Candidates of one prefix share its KV cache (`decoding.score_after_prefix`).
    self.share_prefixes = share_prefixes

  def use_mesh(self, mesh: jax.sharding.Mesh | None) -> None:
    """Splits batches over `mesh`'s batch axes (None: one device, or as jit places them)."""
    self.mesh = mesh
    shards = sharding_lib.batch_shards(mesh) if mesh is not None else 1
    # A batch splits evenly over the batch shards: round up, the extra rows are padding.
    self.batch_size = -(-self.requested_batch_size // shards) * shards
    self.candidate_rows = self.batch_size * CANDIDATES_PER_PREFIX

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
    None is the model's own (perplexity rows are causal: `prefix_lm=False`). Rows sharing a
    prefix share its prefill (module docstring)."""
    prefix_lm = self.prefix_lm if prefix_lm is None else prefix_lm
    results: list[tuple[float, bool] | None] = [None] * len(rows)
    shared, alone = [], list(range(len(rows)))
    if self.share_prefixes:
      groups, alone = shared_groups(rows, self.candidate_rows)
      for group in groups:
        if self._sharing_saves_work(rows, group):
          shared.append(group)
        else:
          alone.extend(group.members)
    if shared:
      self._score_shared(rows, shared, results, desc, prefix_lm)
    self._score_whole(rows, sorted(alone), results, desc, prefix_lm)
    return results

  @functools.cached_property
  def _row_buckets(self) -> tuple[int, ...]:
    """Widths of whole rows and of shared prefixes."""
    return requests_lib.buckets(self.max_length, self.smallest_bucket)

  @functools.cached_property
  def _continuation_buckets(self) -> tuple[int, ...]:
    return requests_lib.buckets(self.max_length, min(SMALLEST_CONTINUATION_BUCKET, self.max_length))

  def _shared_widths(self, rows, group: SharedGroup) -> tuple[int, int]:
    """The (prefix, continuation) bucket widths a group is scored in when shared."""
    longest = max(len(rows[i].continuation) for i in group.members)
    return (
      requests_lib.bucket_of(max(len(group.prefix), 1), self._row_buckets),
      requests_lib.bucket_of(max(longest, 2), self._continuation_buckets),
    )

  def _sharing_saves_work(self, rows, group: SharedGroup) -> bool:
    """Whether a group's token positions, shared, cost less than its whole rows': a short
    prefix before long candidates (PIQA's solutions) gains nothing from sharing it.

    Shared, a group takes one of a batch's prefix slots and its share of the candidate rows:
    max(1, k / CANDIDATES_PER_PREFIX) x (prefix width + CANDIDATES_PER_PREFIX x continuation
    width) positions, times SHARED_STEP_OVERHEAD; whole, the k rows' bucket widths.
    """
    prefix_width, continuation_width = self._shared_widths(rows, group)
    slots = max(1.0, len(group.members) / CANDIDATES_PER_PREFIX)
    shared = slots * (prefix_width + CANDIDATES_PER_PREFIX * continuation_width)
    whole = sum(requests_lib.bucket_of(rows[i].width, self._row_buckets) for i in group.members)
    return shared * SHARED_STEP_OVERHEAD < whole

  def _score_whole(self, rows, selected, results, desc, prefix_lm) -> None:
    """Scores rows[i] for i in `selected` as whole rows (`score_batch`), into `results`."""
    if not selected:
      return
    widths = [rows[i].width for i in selected]
    with self._mesh():
      for width, batch in self._batches(widths, self._row_buckets, desc):
        indices = [selected[j] for j in batch]
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

  def _score_shared(self, rows, groups, results, desc, prefix_lm) -> None:
    """Scores each group's candidates after one prefill of its prefix, into `results`.

    A batch holds groups of one prefix bucket and one continuation bucket: at most
    `batch_size` prefixes and `candidate_rows` candidates, so a run compiles once per pair of
    buckets.
    """
    keyed: dict[tuple[int, int], list[SharedGroup]] = {}
    for group in groups:
      keyed.setdefault(self._shared_widths(rows, group), []).append(group)
    batches = []
    for key, members in sorted(keyed.items(), key=lambda kv: (-sum(kv[0]), kv[0])):
      batch, used = [], 0
      for group in members:
        if len(batch) == self.batch_size or used + len(group.members) > self.candidate_rows:
          batches.append((key, batch))
          batch, used = [], 0
        batch.append(group)
        used += len(group.members)
      batches.append((key, batch))
    progress = tqdm.tqdm(
      batches, desc=desc, unit='batch', disable=not self.progress, mininterval=2.0
    )
    causal_pause_id = self.causal_pause_id if prefix_lm else None
    with self._mesh():
      for (prefix_width, continuation_width), batch in progress:
        prefixes = np.zeros((self.batch_size, prefix_width), np.int32)
        prefix_lengths = np.zeros((self.batch_size,), np.int32)
        continuations = np.zeros((self.candidate_rows, continuation_width), np.int32)
        continuation_lengths = np.zeros((self.candidate_rows,), np.int32)
        owners = np.zeros((self.candidate_rows,), np.int32)
        placed = []
        for p, group in enumerate(batch):
          prefixes[p, : len(group.prefix)] = group.prefix
          prefix_lengths[p] = len(group.prefix)
          for i in group.members:
            c = len(placed)
            continuation = rows[i].continuation
            continuations[c, : len(continuation)] = continuation
            continuation_lengths[c] = len(continuation)
            owners[c] = p
            placed.append(i)
        sums, greedy = decoding.score_after_prefix(
          self.params,
          self.config,
          self._put(prefixes),
          self._put(prefix_lengths),
          self._put(continuations),
          self._put(continuation_lengths),
          self._put(owners),
          prefix_lm=prefix_lm,
          vocab_limit=self.vocab_limit,
          causal_pause_id=causal_pause_id,
        )
        sums, greedy = np.asarray(jax.device_get(sums)), np.asarray(jax.device_get(greedy))
        for c, i in enumerate(placed):
          results[i] = (float(sums[c]), bool(greedy[c]))

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
