"""The lm-evaluation-harness backend (pause_lm/harness, docs/harness.md), offline, no torch.

One small model with fixed random weights (scaled so greedy choices do not hinge on rounding)
checks the backend against `decoding.score` / `decoding.generate` row by row, through lm-eval's
real evaluator on local JSONL tasks of all three request types; one small PauseFT run (with the
harness as its periodic evaluation) checks that lm-eval's version of its task scores what
pause-lm's own evaluation scores, and runs docs/harness.md's walkthrough.
"""

import dataclasses
import json
import os
import re
import shlex
import sys

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pause_lm.data import synthetic
from pause_lm.data import variants
from pause_lm.harness import requests as requests_lib
from pause_lm.model import decoding
from pause_lm.model.transformer import Decoder, ModelConfig

from conftest import (
  EIGHT_DEVICES,
  REPO,
  SMALL_RUN_FLAGS,
  read_scalars,
  register_eight_device_script,
  run_in_process,
)

lm_eval = pytest.importorskip('lm_eval')
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from pause_lm.harness import backend  # noqa: E402
from pause_lm.harness import engine as engine_lib  # noqa: E402
from pause_lm.harness import loading  # noqa: E402

M = 3
MAX_LEN = 96
# The small model of the PauseFT run below (gin/experiments/tiny_test_model.gin at max_len 96,
# the synthetic tokenizer's 256 rows), so both share their compiled programs.
CONFIG = ModelConfig(
  num_embeddings=256,
  num_layers=2,
  num_heads=2,
  emb_dim=64,
  mlp_dim=128,
  max_len=MAX_LEN,
  dropout_rate=0.0,
  dtype='float32',
  param_dtype='float32',
  remat_policy='none',
  scan_layers=False,
)
CONTEXT = 'values 12 7 40 3 . which is the largest ?'


@pytest.fixture(scope='module')
def vocab():
  return synthetic.synthetic_vocabulary()


@pytest.fixture(scope='module')
def model(vocab):
  init = jax.jit(Decoder(CONFIG).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  params = jax.tree.map(lambda p: p * 10.0, init['params'])
  return loading.LoadedModel(
    params=params,
    config=CONFIG,
    vocabulary=vocab,
    prefix_lm=True,
    variant=variants.Variant('pause', M),
    sequence_length=MAX_LEN,
  )


def _lm(model, **kwargs):
  return backend.PauseLM(model=model, progress=False, **{'batch_size': 8, **kwargs})


def _requests(kind, args):
  return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def _score_by_hand(lm, context, continuation, pauses=M):
  """decoding.score on the row [BOS, context, pauses, continuation]."""
  return _score_tokens(lm, *lm.tokenizer_.pair(context, continuation), pauses)


def _score_tokens(lm, context_ids, continuation_ids, pauses=M):
  tokens = [*context_ids, *[lm.model.pause_id] * pauses, *continuation_ids]
  prefix, pad = len(tokens) - len(continuation_ids), [0] * (MAX_LEN - len(tokens))
  batch = {  # Padded to one width (one compile); padding after a row changes nothing before it.
    'decoder_input_tokens': jnp.asarray([[0, *tokens[:-1], *pad]], jnp.int32),
    'decoder_target_tokens': jnp.asarray([[*tokens, *pad]], jnp.int32),
    'decoder_loss_weights': jnp.asarray([[0] * prefix + [1] * len(continuation_ids) + pad]),
    'decoder_causal_attention': jnp.asarray([[1] * (prefix + 1) + [0] * (MAX_LEN - prefix - 1)]),
  }
  if lm.model.causal_pauses:  # A delay-robust model's pauses are outside the prefix block.
    inputs = batch['decoder_input_tokens']
    batch['decoder_causal_attention'] *= inputs != lm.model.pause_id
  return float(decoding.score(lm.model.params, CONFIG, batch)[0][0])


def _write_task(folder, name, output_type, rows, **fields):
  data = folder / f'{name}.jsonl'
  data.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  lines = [
    f'task: {name}',
    'dataset_path: json',
    f'dataset_kwargs: {{data_files: {{test: "{data}"}}}}',
    'test_split: test',
    f'output_type: {output_type}',
    *(f'{k}: {json.dumps(v)}' for k, v in fields.items()),
  ]
  (folder / f'{name}.yaml').write_text('\n'.join(lines) + '\n')


CHOICES = [
  {'q': CONTEXT, 'choices': ['40', '12', '7'], 'label': 0},
  {'q': 'values 5 9 . which is the largest ?', 'choices': ['9', '5'], 'label': 0},
]
QUESTIONS = [
  {'q': CONTEXT, 'a': '40'},
  {'q': 'values 1 2 3 . how many are greater than 1 ?', 'a': '2'},
]
# One text in one window, one longer than a row (several rolling windows).
TEXTS = [
  {'text': 'values 3 1 2 . which is the largest ? 3'},
  {'text': synthetic.document('validation', 0)},
]


@pytest.fixture(scope='module')
def local_tasks(tmp_path_factory):
  folder = tmp_path_factory.mktemp('harness_tasks')
  _write_task(
    folder,
    'local_choice',
    'multiple_choice',
    CHOICES,
    doc_to_text='{{q}}',
    doc_to_choice='{{choices}}',
    doc_to_target='{{label}}',
    metric_list=[{'metric': 'acc'}],
  )
  _write_task(
    folder,
    'local_qa',
    'generate_until',
    QUESTIONS,
    doc_to_text='{{q}}',
    doc_to_target='{{a}}',
    generation_kwargs={'until': ['\n'], 'max_gen_toks': 8, 'do_sample': False},
    metric_list=[{'metric': 'exact_match'}],
  )
  _write_task(
    folder,
    'local_text',
    'loglikelihood_rolling',
    TEXTS,
    doc_to_text='',
    doc_to_target='{{text}}',
    metric_list=[{'metric': 'word_perplexity'}],
  )
  return TaskManager(include_path=str(folder), include_defaults=False)


def test_all_three_request_types_through_lm_eval_match_decoding(model, local_tasks):
  lm = _lm(model)
  results = lm_eval.simple_evaluate(
    model=lm,
    tasks=['local_choice', 'local_qa', 'local_text'],
    task_manager=local_tasks,
    bootstrap_iters=0,
    log_samples=True,
  )
  assert set(results['results']) == {'local_choice', 'local_qa', 'local_text'}
  assert 0 <= results['results']['local_choice']['acc,none'] <= 1
  assert np.isfinite(results['results']['local_text']['word_perplexity,none'])
  samples = results['samples']
  # loglikelihood: each candidate's score is decoding.score's on its own exact row.
  for sample in samples['local_choice']:
    for (context, continuation), ((score, _),) in zip(sample['arguments'], sample['resps']):
      assert continuation.startswith(' ')
      np.testing.assert_allclose(score, _score_by_hand(lm, context, continuation), rtol=2e-6)
  # generate_until: decoding.generate's tokens after context + M pauses, at the exact width.
  for sample in samples['local_qa']:
    context = sample['arguments'][0][0]
    prefix = [*lm.tok_encode(context), *[model.pause_id] * M]
    out = decoding.generate(
      model.params,
      CONFIG,
      jnp.asarray([prefix + [0] * (40 - len(prefix))], jnp.int32),
      jnp.asarray([len(prefix)], jnp.int32),
      max_decode_len=8,
      prefix_lm=True,
      eos_id=model.vocabulary.eos_id,
      vocab_limit=model.pause_id,
    )
    tokens = np.asarray(out.tokens[0])[: int(out.lengths[0])].tolist()
    tokens = [t for t in tokens if t != model.vocabulary.eos_id]
    expected = requests_lib.cut_at_stop(model.vocabulary.decode(tokens), ['\n'])
    assert sample['resps'][0][0] == expected
    assert lm.engine.generate([prefix], max_gen_toks=8) == [tokens]
  # loglikelihood_rolling: M = 0, causal: the sum over a text of each token's log-probability.
  text = TEXTS[0]['text']
  ids = lm.tok_encode(text)
  assert len(ids) < MAX_LEN - 1  # One window: the row is [BOS, text].
  pad = [0] * (MAX_LEN - len(ids))
  row = {
    'decoder_input_tokens': jnp.asarray([[0, *ids[:-1], *pad]], jnp.int32),
    'decoder_target_tokens': jnp.asarray([[*ids, *pad]], jnp.int32),
    'decoder_loss_weights': jnp.asarray([[1] * len(ids) + pad]),
  }
  (rolled, long) = lm.loglikelihood_rolling(
    _requests('loglikelihood_rolling', [(text,), (TEXTS[1]['text'],)])
  )
  assert len(requests_lib.rolling_windows(lm.tok_encode(TEXTS[1]['text']), MAX_LEN)) > 1
  assert np.isfinite(long) and long < rolled
  np.testing.assert_allclose(
    rolled, float(decoding.score(model.params, CONFIG, row)[0][0]), rtol=2e-6
  )
  # One program per bucket and request type, whatever the number of batches.
  assert engine_lib.compiled_programs()['score'] <= 2 * len(requests_lib.buckets(MAX_LEN))


def test_a_rows_score_is_independent_of_batch_size_and_batch_mates(model):
  args = [(CONTEXT, f' {n}') for n in (40, 12, 7, 3, 99)] + [('values 5 9 .', ' 9')]
  reqs = _requests('loglikelihood', args)
  by_size = {size: _lm(model, batch_size=size).loglikelihood(reqs) for size in (1, 8)}
  np.testing.assert_allclose([s for s, _ in by_size[1]], [s for s, _ in by_size[8]], rtol=1e-6)
  assert [g for _, g in by_size[1]] == [g for _, g in by_size[8]]
  # Exactly, rows scored whole: same shapes, other rows never seen.
  whole = _lm(model, batch_size=8, share_prefixes=False).loglikelihood(reqs)
  alone = _lm(model, batch_size=8).loglikelihood(reqs[:1])
  assert alone[0] == whole[0]
  # Candidates of one context share its prefill: the same scores, to float32 rounding.
  np.testing.assert_allclose([s for s, _ in by_size[8]], [s for s, _ in whole], rtol=2e-6)
  assert [g for _, g in by_size[8]] == [g for _, g in whole]
  # The greedy flag is the argmax over the tokenizer's ids, at every continuation position.
  assert any(g for _, g in by_size[8]) or not all(g for _, g in by_size[8])


def test_candidates_of_one_context_share_one_prefill(model, monkeypatch):
  """Shared only where the prefixes are the same tokens; a question with more candidates
  than a batch holds is split, and every score stays the whole row's."""
  lm = _lm(model, batch_size=1)  # 1 prefix and 4 candidates per batch
  cut = 'values ' + ' '.join(['7'] * 100) + ' . which is the largest ?'
  long = ' ' + ' '.join(['9'] * 30)
  args = [
    *((CONTEXT, f' {n}') for n in (40, 12, 7, 3, 99, 5, 8)),  # 7 candidates: split 4 + 3
    ('values 5 9 .', ' 9'),  # a context of its own: scored whole
    (cut, ' 7'),  # a long context cut by different amounts for each continuation
    (cut, ' ' + ' '.join(['7'] * 6)),
    ('values 9 .', long),  # a short context before long candidates: sharing saves nothing
    ('values 9 .', long + ' 9'),
  ]
  rows = [lm._row(*lm.pair_tokens(c, x)) for c, x in args]
  groups, alone = engine_lib.shared_groups(rows, lm.engine.candidate_rows)
  assert [g.members for g in groups] == [(0, 1, 2, 3), (4, 5, 6), (10, 11)]
  assert alone == [7, 8, 9] and rows[8].cut != rows[9].cut
  assert [lm.engine._sharing_saves_work(rows, g) for g in groups] == [True, True, False]
  prefills = []
  score_after_prefix = engine_lib.decoding.score_after_prefix

  def counted(params, config, prefixes, *args, **kwargs):
    prefills.append(np.asarray(prefixes).shape)
    return score_after_prefix(params, config, prefixes, *args, **kwargs)

  monkeypatch.setattr(engine_lib.decoding, 'score_after_prefix', counted)
  scores = lm.loglikelihood(_requests('loglikelihood', args))
  assert prefills == [(1, 32), (1, 32)]  # one prefill of the context for 4, one for 3
  for row, (score, _) in zip(rows, scores):
    expected = _score_tokens(lm, row.prefix[:-M], row.continuation)
    np.testing.assert_allclose(score, expected, rtol=2e-6)


# The engine on one device and on a (data 2, fsdp 2, tensor 2) mesh, its parameters sharded as
# training shards them: scores (shared prefixes and whole rows) and generations.
register_eight_device_script(
  'harness_engine',
  """
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from pause_lm.harness import engine as engine_lib, requests as requests_lib
from pause_lm.model import sizing
from pause_lm.model.transformer import Decoder, ModelConfig
from pause_lm.runtime import sharding

config = ModelConfig(num_embeddings=64, num_layers=2, num_heads=2, emb_dim=32, mlp_dim=64,
                     max_len=64)
init = jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
params = jax.tree.map(lambda p: p * 10.0, nn.unbox(init['params']))
mesh = sharding.create_mesh(data=2, fsdp=2, tensor=2)
_, shardings = sizing.sharded_abstract_params(Decoder(config), mesh, sharding.logical_axis_rules())
rng = np.random.default_rng(0)
contexts = [rng.integers(1, 60, n).tolist() for n in (5, 9, 13)]
rows = [requests_lib.Row(c + [60] * 3, rng.integers(1, 60, k).tolist(), 0)
        for c in contexts for k in (1, 3, 4)] + [requests_lib.Row([7] * 4, [9, 9], 0)]

def run(params, mesh):
  engine = engine_lib.Engine(params, config, vocab_limit=60, eos_id=1, prefix_lm=True,
                             max_length=64, batch_size=4, mesh=mesh, progress=False)
  shared = engine.score(rows)
  engine.share_prefixes = False
  whole = engine.score(rows)
  return shared, whole, engine.generate([r.prefix for r in rows], max_gen_toks=6)

out = {'one': run(params, None), 'eight': run(jax.device_put(params, shardings), mesh),
       'spec': str(jax.device_put(params, shardings)['token_embed']['embedding'].sharding.spec)}
""",
)


@EIGHT_DEVICES
def test_the_engine_on_a_sharded_mesh_scores_and_generates_as_on_one_device(
  eight_device_results,
):
  out = eight_device_results('harness_engine')
  assert out['spec'] == "P('tensor', 'fsdp')"  # the parameters really were sharded
  (one_shared, one_whole, one_generated) = out['one']
  (shared, whole, generated) = out['eight']
  for scores in (one_whole, shared, whole):
    np.testing.assert_allclose([s for s, _ in scores], [s for s, _ in one_shared], rtol=2e-5)
    assert [g for _, g in scores] == [g for _, g in one_shared]
  assert generated == one_generated


def test_a_delay_robust_model_is_read_with_its_pauses_outside_the_prefix_block(model):
  """A random-M finetuned model (issue 26) is scored and decoded as it was trained: what
  `decoding` computes with the pauses outside the block, not what it computes inside."""
  robust = dataclasses.replace(
    model, causal_pauses=True, variant=variants.Variant('pause', 0, max_pauses=M)
  )
  lm = _lm(robust)
  assert lm.config()['causal_pauses'] is True
  ((score, _),) = lm.loglikelihood(_requests('loglikelihood', [(CONTEXT, ' 40')]))
  np.testing.assert_allclose(score, _score_by_hand(lm, CONTEXT, ' 40'), rtol=2e-6)
  assert not np.isclose(score, _score_by_hand(_lm(model), CONTEXT, ' 40'), rtol=1e-4)
  context_ids = lm.tokenizer_.context(CONTEXT)
  prefix = np.asarray([[*context_ids, *[model.pause_id] * M]], np.int32)
  expected = decoding.generate(
    robust.params,
    CONFIG,
    jnp.asarray(prefix),
    jnp.asarray([prefix.shape[1]], jnp.int32),
    max_decode_len=4,
    prefix_lm=True,
    eos_id=robust.vocabulary.eos_id,
    vocab_limit=model.pause_id,
    causal_pause_id=model.pause_id,
  )
  tokens = np.asarray(expected.tokens[0, : int(expected.lengths[0])]).tolist()
  tokens = [t for t in tokens if t != robust.vocabulary.eos_id]
  (generated,) = lm.engine.generate([prefix[0].tolist()], max_gen_toks=4)
  assert generated == tokens


def test_truncation_cuts_only_the_context(model):
  long_context = 'values ' + ' '.join(str(i) for i in range(40)) + ' . which is the largest ?'
  lm = _lm(model, max_length=32)
  context_ids, continuation_ids = lm.tokenizer_.pair(long_context, ' 39')
  row = requests_lib.score_row(context_ids, continuation_ids, lm.delay, lm.max_length)
  assert row.width == 32 and row.cut == len(context_ids) + M + len(continuation_ids) - 32
  assert row.prefix[-M:] == [model.pause_id] * M  # Every pause kept...
  assert row.prefix[:-M] == context_ids[row.cut :]  # ...after the context's end...
  assert row.continuation == continuation_ids  # ...and the whole continuation.
  ((score, _),) = lm.loglikelihood(_requests('loglikelihood', [(long_context, ' 39')]))
  expected = _score_tokens(lm, context_ids[row.cut :], continuation_ids)
  np.testing.assert_allclose(score, expected, rtol=2e-6)
  prepend = requests_lib.Delay(M, model.pause_id, 'prepend')
  assert (
    requests_lib.score_row(context_ids, continuation_ids, prepend, 32).prefix[:M]
    == [model.pause_id] * M
  )
  prefix, cut = requests_lib.generation_prefix(context_ids, lm.delay, 32, max_gen_toks=6)
  assert len(prefix) == 32 - 6 and prefix[-M:] == [model.pause_id] * M and cut > 0
  with pytest.raises(requests_lib.RowTooLongError, match='max_length'):
    requests_lib.score_row(context_ids, list(range(30)), lm.delay, 32)


def test_boundary_space_and_empty_continuations(vocab):
  sp = requests_lib.Tokenizer.of(vocab)
  assert sp.prefix_space  # The synthetic SentencePiece model has a dummy prefix.
  context, continuation = sp.pair('values 1 2 .', ' 42')
  assert continuation == list(vocab.encode('42'))  # As pause-lm's tasks tokenize the answer.
  assert vocab.decode(context + continuation) == 'values 1 2 . 42'  # One space, not 0 or 2.
  assert sp.pair('values 1 2 . ', '42') == (context, continuation)  # Trailing space moved.
  # A continuation that joins the context's last word gets no space of its own.
  context, continuation = sp.pair('values 1 2', '3')
  assert continuation and vocab.decode(context + continuation) == 'values 1 23'
  for bad in ('', ' '):
    with pytest.raises(requests_lib.EmptyContinuationError):
      sp.pair('values 1 2 .', bad)
  # A byte-level BPE keeps the space in the continuation's first token ('Ġ42').
  table = {}
  bpe_encode = lambda s: [table.setdefault(w, len(table)) for w in re.findall(r' ?[^ ]+', s)]
  assert not requests_lib.adds_prefix_space(bpe_encode)
  bpe = requests_lib.Tokenizer(bpe_encode, None, prefix_space=False)
  context, continuation = bpe.pair('values 1 2 .', ' 42')
  assert continuation == bpe_encode(' 42') and context + continuation == bpe_encode(
    'values 1 2 . 42'
  )


def test_lm_eval_missing_names_the_install_command(monkeypatch):
  from pause_lm.harness import lm_eval_import  # pylint: disable=g-import-not-at-top

  def fail(name):
    raise ImportError(f'No module named {name!r}')

  monkeypatch.setattr(lm_eval_import.importlib, 'import_module', fail)
  with pytest.raises(lm_eval_import.LmEvalMissingError, match=re.escape(".[harness]'")):
    lm_eval_import.require()


def test_the_paper_tasks_are_indexed_with_pause_lms_prompts():
  manager = TaskManager(
    include_path=str(REPO / 'pause_lm/harness/tasks/paper'), include_defaults=False
  )
  names = {
    'pause_gsm8k',
    'pause_squad',
    'pause_coqa',
    'pause_commonsense_qa',
    'pause_piqa',
    'pause_lambada',
    'pause_hellaswag',
    'pause_webqs',
    'pause_nq_open',
  }
  assert names <= set(manager.all_tasks)
  import yaml  # pylint: disable=g-import-not-at-top

  gsm8k = yaml.safe_load((REPO / 'pause_lm/harness/tasks/paper/pause_gsm8k.yaml').read_text())
  import jinja2  # pylint: disable=g-import-not-at-top

  text = jinja2.Template(gsm8k['doc_to_text']).render(question='What is 2+2?')
  assert text == 'question: What is 2+2? answer:'  # tasks/paper.py's _gsm8k


def test_the_training_hook_of_a_pretraining_run(model, tmp_path):
  from pause_lm.harness import periodic  # pylint: disable=g-import-not-at-top

  evaluate = periodic.harness_evaluator(
    'synthetic_pause_pretrain',
    CONFIG,
    MAX_LEN,
    str(tmp_path),
    tasks=['pause_synthetic_text'],
    limit=1,
    every_steps=10,
    final_step=15,
  )
  assert evaluate(model.params, 5) == {}  # Not its turn.
  scalars = evaluate(model.params, 15)  # The last step always is.
  assert set(scalars) == {
    'harness/pause_synthetic_text/word_perplexity',
    'harness/pause_synthetic_text/byte_perplexity',
    'harness/pause_synthetic_text/bits_per_byte',
  }
  saved = json.loads((tmp_path / 'eval' / 'step_15' / 'harness.json').read_text())
  assert saved['config']['pause_lm']['num_pauses'] == 0  # A pretraining task: no pauses.
  assert not saved['config']['pause_lm']['prefix_lm']


# ----- A PauseFT run: the harness scores what pause-lm's evaluation scores.
# test_evaluation.py's PauseFT settings (M, lengths, batch, rate), so that in a whole test run
# the compilation cache holds this run's programs already.
PAUSEFT_M = 8
SEQUENCE_LENGTH = 96
MAX_LEN_FLAG = f'--gin_bindings=ModelConfig.max_len = {SEQUENCE_LENGTH}'
# The small model alone (SMALL_RUN's training settings are not evaluate.gin's).
MODEL_FLAGS = [f for f in SMALL_RUN_FLAGS if 'tiny_test_model' in f] + [MAX_LEN_FLAG]
EXAMPLES = 8


@pytest.fixture(scope='module')
def pauseft_run(tmp_path_factory):
  """PauseFT (gin/pauseft.gin, M = 4) of the small model with the harness as its evaluation
  (gin/harness.gin). From fresh parameters (INIT_CHECKPOINT=None): what is compared is how two
  evaluations score one model, and a pretraining run first would double the fixture's time."""
  model_dir = tmp_path_factory.mktemp('pauseft_harness')
  run_in_process(
    'pause_lm.train',
    '--gin_file=gin/pauseft.gin',
    '--gin_file=gin/harness.gin',
    *SMALL_RUN_FLAGS,
    MAX_LEN_FLAG,
    f'--gin.MODEL_DIR={str(model_dir)!r}',
    '--gin.INIT_CHECKPOINT=None',
    "--gin.BASE_TASK='synthetic_qa'",
    f'--gin.NUM_PAUSES={PAUSEFT_M}',
    "--gin.HARNESS_TASKS=['pause_synthetic_qa']",
    f'--gin.HARNESS_LIMIT={EXAMPLES}',
    f'--gin.SEQUENCE_LENGTH={SEQUENCE_LENGTH}',
    '--gin.TRAIN_STEPS=2',
    '--gin.LEARNING_RATE=1e-3',
    '--gin.EVAL_EVERY_STEPS=2',
    f'--gin.EVAL_NUM_EXAMPLES={EXAMPLES}',
    '--gin.EVAL_BATCH_SIZE=8',
  )
  return model_dir


# The tests that start from `pauseft_run` share one worker, so that it is trained once.
ON_THE_PAUSEFT_RUN = pytest.mark.xdist_group('harness_pauseft_run')


@ON_THE_PAUSEFT_RUN
def test_pauseft_scores_the_same_through_the_harness_as_pause_lm_evaluate(pauseft_run, tmp_path):
  # During training: both evaluations at the last step, in TensorBoard.
  scalars = read_scalars(pauseft_run)
  harness = scalars['harness/pause_synthetic_qa/exact_match'][2]
  assert harness == pytest.approx(scalars['eval/accuracy'][2] / 100)
  assert (pauseft_run / 'eval' / 'step_2' / 'harness.json').exists()
  # The evaluate command's settings, then the harness on the run read back from disk.
  result = run_in_process(
    'pause_lm.evaluate',
    '--gin_file=gin/evaluate.gin',
    *MODEL_FLAGS,
    f'--gin.CHECKPOINT_PATH={str(pauseft_run)!r}',
    f"--gin.TASK='synthetic_qa_pause{PAUSEFT_M}'",
    f'--gin.NUM_EXAMPLES={EXAMPLES}',
    f'--gin.EVAL_OUTPUT_DIR={str(tmp_path)!r}',
  )
  model = loading.load(str(pauseft_run))
  assert model.prefix_lm and model.variant.num_pauses == PAUSEFT_M
  assert model.config == CONFIG  # The programs compiled above serve this model too.
  lm = backend.PauseLM(model=model, progress=False, batch_size=8)
  assert lm.num_pauses == PAUSEFT_M and lm.max_length == SEQUENCE_LENGTH
  results = lm_eval.simple_evaluate(
    model=lm,
    tasks=['pause_synthetic_qa'],
    task_manager=TaskManager(
      include_path=str(REPO / 'pause_lm/harness/tasks/synthetic'), include_defaults=False
    ),
    limit=EXAMPLES,
    bootstrap_iters=0,
    log_samples=True,
  )
  accuracy = results['results']['pause_synthetic_qa']['exact_match,none']
  assert 100 * accuracy == pytest.approx(result.metrics['accuracy'])
  samples = sorted(results['samples']['pause_synthetic_qa'], key=lambda s: s['doc_id'])
  assert [s['target'] for s in samples] == [r['target'] for r in result.records]
  assert [s['filtered_resps'][0].strip() for s in samples] == [
    r['prediction'] for r in result.records
  ]


def _walkthrough_commands():
  text = (REPO / 'docs' / 'harness.md').read_text()
  block = text.split('<!-- walkthrough -->')[1].split('<!-- /walkthrough -->')[0]
  script = block.split('```sh')[1].split('```')[0].replace('\\\n', ' ')
  return [shlex.split(line) for line in script.strip().splitlines()]


@ON_THE_PAUSEFT_RUN
def test_the_walkthrough_runs_as_written(pauseft_run, monkeypatch, capsys):
  from pause_lm.harness import __main__ as command  # pylint: disable=g-import-not-at-top

  commands = _walkthrough_commands()
  assert [c[:3] for c in commands] == [['python', '-m', 'pause_lm.harness']] * 2
  monkeypatch.chdir(REPO)
  monkeypatch.setattr(sys, 'argv', list(sys.argv))
  for words in commands:
    argv = [w.replace('runs/pauseft', str(pauseft_run)) for w in words[2:]]
    command.main(argv)
  out = capsys.readouterr().out
  assert 'pause_synthetic_text' in out and 'word_perplexity' in out
  results = list((pauseft_run / 'harness').rglob('results_*.json'))
  assert results and list((pauseft_run / 'harness').rglob('samples_pause_synthetic_qa_*.jsonl'))
  table = (pauseft_run / 'sweep' / 'sweep.md').read_text()
  assert '| M_inf=0 | M_inf=4 |' in table and 'pause_synthetic_choice | acc' in table
  rows = json.loads((pauseft_run / 'sweep' / 'sweep.json').read_text())
  assert {r['num_pauses'] for r in rows} == {0, 4}
  saved = json.loads((pauseft_run / 'sweep' / 'num_pauses_0' / 'results.json').read_text())
  assert saved['config']['pause_lm']['num_pauses'] == 0


def test_the_sweep_table():
  from pause_lm.harness import sweep  # pylint: disable=g-import-not-at-top

  assert sweep.parse_num_pauses('0,2,5,10') == [0, 2, 5, 10]
  with pytest.raises(ValueError, match='distinct'):
    sweep.parse_num_pauses('2,2')
  results = {
    'results': {
      'a': {
        'alias': 'a',
        'sample_len': 8,
        'acc,none': 0.5,
        'acc_stderr,none': 0.1,
        'em,strict': 0.25,
      },
    }
  }
  rows = sweep.metric_rows(results, 5)
  assert rows == [
    {'task': 'a', 'metric': 'acc', 'num_pauses': 5, 'value': 0.5},
    {'task': 'a', 'metric': 'em,strict', 'num_pauses': 5, 'value': 0.25},
  ]
  assert '| a | acc | 0.5000 |' in sweep.table(rows)


def test_clear_errors(model):
  with pytest.raises(ValueError, match='Unknown pause_lm model_args'):
    _lm(model, num_pause=3)
  with pytest.raises(ValueError, match='max_len'):
    _lm(model, max_length=MAX_LEN + 1)
  with pytest.raises(FileNotFoundError, match='pretrained='):
    loading.load('/nonexistent/run')
  lm = _lm(model)
  with pytest.raises(ValueError, match='top_p'):
    lm.generation_settings({'do_sample': True, 'top_p': 0.9})
  assert lm.generation_settings({'do_sample': True})['temperature'] == 1.0
  assert lm.generation_settings({'temperature': 0.0, 'until': 'x'})['until'] == ['x']


def test_a_converted_hugging_face_model_loads_and_scores(tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top

  import tokenizers  # pylint: disable=g-import-not-at-top

  from pause_lm.hf import convert  # pylint: disable=g-import-not-at-top

  source = tmp_path / 'hf_in'
  shutil.copytree(REPO / 'tests' / 'testdata' / 'hf' / 'qwen2', source)
  words = ['<unk>', 'the', 'cat', 'sat', 'on', 'mat']
  tokenizer = tokenizers.Tokenizer(
    tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='<unk>')
  )
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tokenizer.save(os.fspath(source / 'tokenizer.json'))
  convert.from_hf(os.fspath(source), os.fspath(tmp_path / 'converted'))
  # model.gin + hf_base/tokenizer.json; this tokenizer names no EOS, so one is bound.
  model = loading.load(
    os.fspath(tmp_path / 'converted'), gin_bindings=("hf_vocabulary.eos_token = '<unk>'",)
  )
  # Causal, no pauses of its own; its <pause> row follows the 90 ids of its config.
  assert not model.prefix_lm and model.variant is None and model.pause_id == 90
  lm = backend.PauseLM(model=model, num_pauses=2, progress=False)
  ((score, _),) = lm.loglikelihood(_requests('loglikelihood', [('the cat', ' sat on the mat')]))
  context, continuation = lm.tokenizer_.pair('the cat', ' sat on the mat')
  assert context == [1, 2] and continuation == [3, 4, 1, 5]
  tokens = [*context, 90, 90, *continuation]
  batch = {
    'decoder_input_tokens': jnp.asarray([[0, *tokens[:-1]]], jnp.int32),
    'decoder_target_tokens': jnp.asarray([tokens], jnp.int32),
    'decoder_loss_weights': jnp.asarray([[0] * 4 + [1] * 4]),
  }
  expected = float(decoding.score(model.params, model.config, batch)[0][0])
  np.testing.assert_allclose(score, expected, rtol=2e-6)
