"""The `pause_lm` model of lm-evaluation-harness: every request type, pauses where pause
inference puts them.

  loglikelihood          the continuation's log-likelihood after `context + M pauses`
                         (`requests.score_row`: only the context is cut to fit max_length)
  generate_until         KV-cache decoding (`decoding.generate`) after `context + M pauses`,
                         greedy or sampled, to EOS or max_gen_toks, cut at the first `until`
  loglikelihood_rolling  perplexity of a whole text with M = 0 and causal attention: a text
                         scored token by token has no answer to delay, and pauses between its
                         tokens would score a text the model never sees in pause inference

`model_args` (`--model_args pretrained=runs/x,num_pauses=10,...`):

  pretrained       MODEL_DIR, one step folder, or a converted model's folder (`loading.load`)
  num_pauses       M_inf (default: the M the model was finetuned with, else 0)
  pause_placement  'append' (the paper) or 'prepend' (default: as finetuned)
  filler           a one-token text (e.g. '.') used instead of <pause> (default: as finetuned)
  prefix_lm        bidirectional attention over context + pauses (default: as finetuned)
  max_length       tokens per row (default: the training sequence length, else max_len)
  max_gen_toks     generation budget when a task does not set one (default 256)
  batch_size       rows per model call: lm-eval's --batch_size (results do not depend on it)
  score_eos        also score EOS after each continuation, as pause-lm's own rank
                   classification does (default False, as lm-eval's backends)
  share_prefixes   candidates of one context score after one prefill of `context + M
                   pauses`, sharing its KV cache (default True; exact, see `engine`)
  tokenizer, task  a tokenizer.json, or the registered task whose vocabulary applies
  gin_file, gin_bindings   the model's gin (default: the folder's model.gin / config.gin);
                   several bindings separated by ';'
  seed             sampling seed (default 0); progress: show progress bars (default True)
"""

from collections.abc import Sequence
import json
from typing import Any

from absl import logging

from pause_lm.harness import lm_eval_import

lm_eval_import.require()

# pylint: disable=g-import-not-at-top,wrong-import-position
from lm_eval.api import model as lm_eval_model
from lm_eval.api import registry

from pause_lm.data import variants
from pause_lm.harness import engine as engine_lib
from pause_lm.harness import loading
from pause_lm.harness import requests as requests_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

MODEL_NAME = 'pause_lm'
DEFAULT_MAX_GEN_TOKS = 256


def _bool(value) -> bool | None:
  if value is None or isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  if text in ('1', 'true', 'yes'):
    return True
  if text in ('0', 'false', 'no'):
    return False
  raise ValueError(f'Expected a boolean (True/False), got {value!r}.')


def _int(value) -> int | None:
  return None if value is None or value == '' else int(value)


class PauseLM(lm_eval_model.TemplateLM):
  """A pause-lm model as an lm-eval `LM` (registered as `pause_lm`)."""

  def __init__(
    self,
    pretrained: str | None = None,
    num_pauses: int | None = None,
    pause_placement: str | None = None,
    filler: str | None = None,
    prefix_lm: bool | None = None,
    max_length: int | None = None,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    batch_size: int | str = 8,
    score_eos: bool = False,
    share_prefixes: bool = True,
    tokenizer: str | None = None,
    task: str | None = None,
    gin_file: str | None = None,
    gin_bindings: str | None = None,
    seed: int = 0,
    progress: bool = True,
    model: loading.LoadedModel | None = None,
    **unused,
  ):
    """See the module docstring; `model` is an already loaded model (a training run's)."""
    super().__init__()
    for name in ('device', 'max_batch_size', 'dtype', 'trust_remote_code'):
      unused.pop(name, None)
    if unused:
      raise ValueError(
        f'Unknown pause_lm model_args {sorted(unused)}; known: pretrained, num_pauses, '
        'pause_placement, filler, prefix_lm, max_length, max_gen_toks, batch_size, score_eos, '
        'share_prefixes, tokenizer, task, gin_file, gin_bindings, seed, progress.'
      )
    if model is None:
      if not pretrained:
        raise ValueError('pause_lm needs --model_args pretrained=MODEL_DIR (or a step folder).')
      model = loading.load(
        str(pretrained),
        gin_files=tuple(str(gin_file).split(';')) if gin_file else (),
        gin_bindings=tuple(b for b in str(gin_bindings or '').split(';') if b.strip()),
        tokenizer=tokenizer,
        task=task,
      )
    self.model = model
    self.tokenizer_ = requests_lib.Tokenizer.of(model.vocabulary)
    finetuned = model.variant or variants.Variant('std')
    self.placement = pause_placement or finetuned.placement
    self.filler = filler if filler is not None else model.filler
    self.prefix_lm = model.prefix_lm if prefix_lm is None else _bool(prefix_lm)
    self.max_gen_toks = int(max_gen_toks)
    self.score_eos = bool(_bool(score_eos))
    self.seed = int(seed)
    if batch_size in ('auto', None) or str(batch_size).startswith('auto'):
      batch_size = 8
    max_length = _int(max_length) or model.sequence_length or model.config.max_len
    if max_length > model.config.max_len:
      raise ValueError(
        f"max_length={max_length} exceeds the model's max_len={model.config.max_len}."
      )
    self.engine = engine_lib.Engine(
      model.params,
      model.config,
      vocab_limit=model.pause_id,
      eos_id=model.vocabulary.eos_id,
      prefix_lm=self.prefix_lm,
      causal_pause_id=model.pause_id if model.causal_pauses else None,
      max_length=max_length,
      batch_size=int(batch_size),
      mesh=model.mesh,
      progress=bool(_bool(progress)),
      share_prefixes=bool(_bool(share_prefixes)),
    )
    self.set_num_pauses(finetuned.largest if num_pauses is None else int(num_pauses))

  # ----- settings
  def set_num_pauses(self, num_pauses: int) -> None:
    """M_inf for the requests that follow (a sweep reuses one loaded model)."""
    token = self.model.pause_id
    if self.filler is not None:
      ids = self.tokenizer_.encode(self.filler)
      if len(ids) != 1:
        raise ValueError(
          f'filler={self.filler!r} encodes to {len(ids)} tokens {ids}; a filler must be one token.'
        )
      token = ids[0]
    self.delay = requests_lib.Delay(int(num_pauses), token, self.placement)

  @property
  def num_pauses(self) -> int:
    return self.delay.num_pauses

  @property
  def max_length(self) -> int:
    return self.engine.max_length

  @property
  def batch_size(self) -> int:
    return self.engine.batch_size

  def config(self) -> dict[str, Any]:
    """What the results record about the model."""
    return {
      'source': self.model.source,
      'num_pauses': self.num_pauses,
      'pause_placement': self.placement,
      'filler': self.filler,
      'prefix_lm': self.prefix_lm,
      'causal_pauses': self.model.causal_pauses,
      'max_length': self.max_length,
      'score_eos': self.score_eos,
    }

  # ----- TemplateLM's tokenizer interface
  @property
  def eot_token_id(self) -> int:
    return self.model.vocabulary.eos_id

  @property
  def tokenizer_name(self) -> str:
    return str(self.model.vocabulary).replace('/', '__')

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    del add_special_tokens, kwargs
    return self.tokenizer_.context(string)

  def tok_decode(self, tokens: Sequence[int]) -> str:
    return self.tokenizer_.decode(tokens)

  # ----- loglikelihood
  def pair_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context, continuation) ids of one request, EOS after the continuation if score_eos."""
    context_ids, continuation_ids = self.tokenizer_.pair(context, continuation)
    if self.score_eos:
      continuation_ids = [*continuation_ids, self.eot_token_id]
    return context_ids, continuation_ids

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    del disable_tqdm
    rows = [self._row(*self.pair_tokens(*req.args)) for req in requests]
    return self._scored(requests, rows)

  def _row(self, context, continuation) -> requests_lib.Row:
    return requests_lib.score_row(context, continuation, self.delay, self.max_length)

  def _scored(self, requests, rows, desc='loglikelihood'):
    truncated = sum(row.cut > 0 for row in rows)
    if truncated:
      logging.warning(
        '%d of %d requests had their context cut (start) to fit max_length=%d with %d pauses.',
        truncated,
        len(rows),
        self.max_length,
        self.num_pauses,
      )
    results = self.engine.score(rows, desc=desc)
    for req, result in zip(requests, results):
      self.cache_hook.add_partial('loglikelihood', req.args, result)
    return results

  def _loglikelihood_tokens(self, requests, **kwargs) -> list[tuple[float, bool]]:
    """TemplateLM's token-level entry: ((context, continuation), context ids, continuation ids)."""
    del kwargs
    rows = [self._row(context, continuation) for _, context, continuation in requests]
    return self.engine.score(rows)

  # ----- loglikelihood_rolling
  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Perplexity rows: M = 0 and causal attention (see the module docstring)."""
    del disable_tqdm
    rows, owners = [], []
    for i, req in enumerate(requests):
      (text,) = req.args
      for context, continuation in requests_lib.rolling_windows(
        self.tokenizer_.context(text), self.max_length
      ):
        rows.append(requests_lib.Row(context, continuation, 0))
        owners.append(i)
    sums = [0.0] * len(requests)
    for owner, (value, _) in zip(
      owners, self.engine.score(rows, desc='loglikelihood_rolling', prefix_lm=False)
    ):
      sums[owner] += value
    for req, value in zip(requests, sums):
      self.cache_hook.add_partial('loglikelihood_rolling', req.args, value)
    return sums

  # ----- generate_until
  def generation_settings(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """until, max_gen_toks, temperature, top_k of one request's generation kwargs."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop('until', None) or []
    until = [until] if isinstance(until, str) else list(until)
    max_gen_toks = int(kwargs.pop('max_gen_toks', self.max_gen_toks))
    do_sample = _bool(kwargs.pop('do_sample', None))
    temperature = float(kwargs.pop('temperature', 0.0) or 0.0)
    top_k = int(kwargs.pop('top_k', 0) or 0)
    if do_sample is False or (do_sample is None and temperature == 0.0):
      temperature = 0.0
    elif temperature == 0.0:
      temperature = 1.0  # do_sample without a temperature: the model's own distribution.
    top_p = kwargs.pop('top_p', None)
    if top_p not in (None, 1, 1.0):
      raise ValueError(f'pause_lm samples with temperature and top_k only; got top_p={top_p}.')
    kwargs.pop('seed', None)
    if kwargs:
      logging.warning('pause_lm ignores these generation kwargs: %s', sorted(kwargs))
    return {
      'until': until,
      'max_gen_toks': max_gen_toks,
      'temperature': temperature,
      'top_k': top_k,
    }

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    del disable_tqdm
    groups: dict[str, list[int]] = {}
    settings = []
    for i, req in enumerate(requests):
      setting = self.generation_settings(req.args[1])
      settings.append(setting)
      key = json.dumps({k: v for k, v in setting.items() if k != 'until'}, sort_keys=True)
      groups.setdefault(key, []).append(i)
    outputs: list[str | None] = [None] * len(requests)
    for indices in groups.values():
      setting = settings[indices[0]]
      prefixes = []
      for i in indices:
        prefix, _ = requests_lib.generation_prefix(
          self.tok_encode(requests[i].args[0]),
          self.delay,
          self.max_length,
          setting['max_gen_toks'],
        )
        prefixes.append(prefix)
      generated = self.engine.generate(
        prefixes,
        max_gen_toks=setting['max_gen_toks'],
        temperature=setting['temperature'],
        top_k=setting['top_k'],
        seed=self.seed,
      )
      for i, tokens in zip(indices, generated):
        text = requests_lib.cut_at_stop(self.tok_decode(tokens), settings[i]['until'])
        outputs[i] = text
        self.cache_hook.add_partial('generate_until', requests[i].args, text)
    return outputs


def register() -> type[PauseLM]:
  """The backend's class, registered as lm-eval's `pause_lm` model (when this module is
  imported: lm-eval has no plugin discovery, so `python -m pause_lm.harness` imports it)."""
  return PauseLM


registry.register_model(MODEL_NAME)(PauseLM)
