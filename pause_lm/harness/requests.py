"""lm-eval's requests as pause-lm token rows: the pauses where pause inference puts them.

No JAX, TensorFlow or lm-eval here: text in, token lists and fixed-width numpy rows out.

A scored row is what `decoding.score` reads for a prefix-LM (or LM) batch:

  inputs   [0 (BOS), c_1 .. c_C, p_1 .. p_M, t_1 .. t_{T-1}]
  targets  [c_1 .. c_C, p_1 .. p_M, t_1 .. t_T]
  weights  1 on t_1 .. t_T only

with `decoder_causal_attention` over BOS + context + pauses under prefix-LM (as finetuning
shows them). `prepend` placement puts the pauses before the context instead. Only the context
is cut to fit `max_length` (its start: the question usually sits at its end), never the pauses
or the continuation. Few-shot examples are part of lm-eval's context string, so they never get
pauses of their own: the M pauses come once, after the whole context.

Tokenization follows pause-lm's own tasks, which tokenize the prefix and the answer separately:
lm-eval's continuations start with the boundary space (`' Paris'`); a tokenizer that adds a
space before each text it encodes (SentencePiece's dummy prefix, the Llama family's) already
makes `'Paris'` a word-initial token, so that space is dropped before encoding; a byte-level
BPE (GPT-2) keeps it (`' Paris'` is `'ĠParis'`). Trailing spaces of a context move to the
continuation first, as lm-eval's own backends do. Either way no boundary space is lost or
doubled, and an empty continuation is an error, never a row without a target.
"""

from collections.abc import Callable, Sequence
import dataclasses
import math

import numpy as np

from pause_lm.data import variants

Encode = Callable[[str], Sequence[int]]


class EmptyContinuationError(ValueError):
  """A continuation has no tokens: there would be nothing to score."""


class RowTooLongError(ValueError):
  """The pauses and the continuation alone do not fit in max_length."""


def adds_prefix_space(encode: Encode) -> bool:
  """Whether the tokenizer puts a word boundary before every text it encodes.

  SentencePiece with its dummy prefix (and the Llama family's `tokenizer.json`) encodes
  `'a'` + `'b'` as it encodes `'a b'`; a byte-level BPE encodes `'a'` + `' b'` that way.
  """
  for first, second in (('a', 'b'), ('the', 'of'), ('x', 'y')):
    joined = list(encode(f'{first} {second}'))
    if list(encode(first)) + list(encode(second)) == joined:
      return True
    if list(encode(first)) + list(encode(' ' + second)) == joined:
      return False
  return False


def move_trailing_spaces(context: str, continuation: str) -> tuple[str, str]:
  """Trailing spaces of the context go to the start of the continuation (lm-eval's rule)."""
  stripped = context.rstrip(' ')
  return stripped, context[len(stripped) :] + continuation


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A vocabulary's encode/decode with lm-eval's boundary-space handling."""

  encode: Encode
  decode: Callable[[Sequence[int]], str]
  prefix_space: bool

  @classmethod
  def of(cls, vocabulary) -> 'Tokenizer':
    """From a seqio vocabulary (a `PauseVocabulary`)."""
    encode = lambda text: [int(t) for t in vocabulary.encode(text)]
    decode = lambda ids: vocabulary.decode([int(t) for t in ids])
    return cls(encode, decode, adds_prefix_space(encode))

  def context(self, text: str) -> list[int]:
    return list(self.encode(text)) if text else []

  def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as pause-lm's tasks would tokenize them."""
    context, continuation = move_trailing_spaces(context, continuation)
    if self.prefix_space and continuation.startswith(' '):
      ids = list(self.encode(continuation[1:]))
    elif self.prefix_space and context:
      # A continuation that joins the context's last word ('2+2=' + '4'): encoding it alone
      # would add a space. The whole text's tokens are split where they stop matching the
      # context's (where the two merge into one token, that token is scored with the
      # continuation), so the text is exactly context + continuation.
      whole, head = list(self.encode(context + continuation)), self.context(context)
      common = 0
      while common < min(len(whole), len(head)) and whole[common] == head[common]:
        common += 1
      head, ids = whole[:common], whole[common:]
      if not ids:
        raise EmptyContinuationError(
          f'The continuation {continuation!r} adds no token to {context[-40:]!r}.'
        )
      return head, ids
    else:
      ids = list(self.encode(continuation))
    if not ids:
      raise EmptyContinuationError(
        f'The continuation {continuation!r} (after {context[-40:]!r}) has no tokens: there is '
        "nothing to score. Check the task's doc_to_target / doc_to_choice."
      )
    return self.context(context), ids


@dataclasses.dataclass(frozen=True)
class Delay:
  """The M delay tokens of pause inference: how many, which id, where."""

  num_pauses: int = 0
  token: int = 0  # the <pause> id, or the filler's
  placement: str = 'append'

  def __post_init__(self):
    if self.num_pauses < 0:
      raise ValueError(f'num_pauses must be >= 0, got {self.num_pauses}.')
    if self.placement not in variants.PLACEMENTS:
      raise ValueError(
        f'pause_placement must be one of {variants.PLACEMENTS}, got {self.placement!r}.'
      )

  def around(self, context: Sequence[int]) -> list[int]:
    """The prefix: the context with the delay tokens after (or before) it."""
    delay = [self.token] * self.num_pauses
    return [*context, *delay] if self.placement == 'append' else [*delay, *context]


def cut_context(context: Sequence[int], room: int) -> tuple[list[int], int]:
  """The end of `context` that fits in `room` tokens, and how many tokens were cut."""
  cut = max(len(context) - max(room, 0), 0)
  return list(context[cut:]), cut


@dataclasses.dataclass(frozen=True)
class Row:
  """One scored row: its prefix (context + delay) and continuation tokens."""

  prefix: list[int]
  continuation: list[int]
  cut: int  # context tokens cut to fit

  @property
  def width(self) -> int:
    return len(self.prefix) + len(self.continuation)


def score_row(
  context: Sequence[int], continuation: Sequence[int], delay: Delay, max_length: int
) -> Row:
  """The row of one log-likelihood request: context cut to fit, never the pauses or the
  continuation."""
  if not continuation:
    raise EmptyContinuationError('A log-likelihood request has an empty continuation.')
  room = max_length - delay.num_pauses - len(continuation)
  if room < 0:
    raise RowTooLongError(
      f'{delay.num_pauses} pauses + a continuation of {len(continuation)} tokens exceed '
      f"max_length={max_length}; raise max_length (up to the model's max_len) or lower "
      'num_pauses.'
    )
  context, cut = cut_context(context, room)
  return Row(delay.around(context), list(continuation), cut)


def generation_prefix(
  context: Sequence[int], delay: Delay, max_length: int, max_gen_toks: int
) -> tuple[list[int], int]:
  """The prefix of a generation request (context cut to leave room for the answer)."""
  room = max_length - max_gen_toks - delay.num_pauses
  if room < 0:
    raise RowTooLongError(
      f'{delay.num_pauses} pauses + max_gen_toks={max_gen_toks} exceed max_length={max_length}.'
    )
  context, cut = cut_context(context, room)
  return delay.around(context), cut


def buckets(max_length: int, smallest: int = 32) -> tuple[int, ...]:
  """Fixed row widths: powers of two from `smallest`, then max_length itself."""
  widths, width = [], smallest
  while width < max_length:
    widths.append(width)
    width *= 2
  return (*widths, max_length)


def bucket_of(width: int, widths: Sequence[int]) -> int:
  for w in widths:
    if width <= w:
      return w
  raise RowTooLongError(f'A row of {width} tokens exceeds the widest bucket {widths[-1]}.')


def score_features(
  rows: Sequence[Row], width: int, batch_size: int, prefix_lm: bool
) -> dict[str, np.ndarray]:
  """A padded batch of rows (zero rows after the real ones) in `decoding.score`'s features."""
  inputs = np.zeros((batch_size, width), np.int32)
  targets = np.zeros((batch_size, width), np.int32)
  weights = np.zeros((batch_size, width), np.float32)
  causal = np.zeros((batch_size, width), np.int32)
  for r, row in enumerate(rows):
    tokens = [*row.prefix, *row.continuation]
    n, p = len(tokens), len(row.prefix)
    targets[r, :n] = tokens
    inputs[r, 1:n] = tokens[:-1]
    weights[r, p:n] = 1.0
    causal[r, : p + 1] = 1
  features = {
    'decoder_input_tokens': inputs,
    'decoder_target_tokens': targets,
    'decoder_loss_weights': weights,
  }
  if prefix_lm:
    features['decoder_causal_attention'] = causal
  return features


def rolling_windows(tokens: Sequence[int], max_length: int) -> list[tuple[list[int], list[int]]]:
  """(context, continuation) windows that score every token of a text exactly once.

  lm-eval's rolling windows (`utils.get_rolling_token_windows` with context_len=1, made
  disjoint), each fitting a row of `max_length` behind BOS: the first window predicts the
  first tokens from BOS alone, each later one as many tokens as fit after the context it keeps.
  """
  tokens, window = list(tokens), max_length - 1
  if not tokens:
    return []
  first = min(window, len(tokens))
  windows = [([], tokens[:first])]
  predicted = first
  while predicted < len(tokens):
    count = min(len(tokens) - predicted, window)
    end = predicted + count
    context = tokens[max(end - window - 1, 0) : end - 1]
    windows.append((context[: len(context) - (count - 1)], tokens[predicted:end]))
    predicted = end
  return windows


def num_batches(count: int, batch_size: int) -> int:
  return math.ceil(count / batch_size)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
  """The text up to the first stop string (the stop string itself removed)."""
  ends = [text.find(s) for s in until if s and s in text]
  return text[: min(ends)] if ends else text
