"""Runs docs/own_data.md's file-task walkthrough: its gin file and its own commands.

The section's `python -m pause_lm.{convert,train,evaluate}` commands are read from its sh blocks
and run in this process (same flags, gin files and bindings), its gin file is written from its
first gin block, and the working folder holds a tiny random Qwen3 checkpoint
(tests/testdata/hf/qwen3, 100 token ids) with a tokenizer of as many ids trained here on the
task's own text (a BPE over characters, exact on it), and Parquet files of question/answer
pairs (several accepted answers each). `HF_MODEL` switches the checkpoint.
"""

import json
import os
import re
import shlex
import shutil

import gin
import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pause_lm.evaluation import evaluator as evaluation
from pause_lm.hf import convert
from pause_lm.hf import models as hf
from pause_lm.runtime import gin_utils
from pause_lm.training import trainer
from pause_lm.data import vocab

DOC = os.path.join(gin_utils.REPO_ROOT, 'docs', 'own_data.md')
SECTION = '## Downstream tasks from your files, no Python'
DATA = os.path.join(os.path.dirname(__file__), 'testdata', 'hf')
# The tiny checkpoint converted (any family `--from_hf` reads will do) and its id count, where
# <pause> goes. 'smollm' (400 ids, with tests/testdata/hf/tokenizer) compiles the programs
# tests/test_pretrained_walkthrough.py compiles, so with the session's compilation cache it
# costs a third of 'qwen3''s time.
HF_MODEL, PAUSE_ID = 'qwen3', 100


def _section() -> str:
  text = open(DOC).read()
  return text[text.index(SECTION) :]


def _blocks(kind):
  return re.findall(rf'```{kind}\n(.*?)```', _section(), flags=re.S)


def _commands():
  """Each pause-lm command of the sh blocks, continuation lines joined, `for M` loops unrolled."""
  commands = []
  for block in _blocks('sh'):
    block = block.replace('\\\n', ' ')
    loop = re.match(r'for (\w+) in ([\w ]+); do\n(.*?)\ndone', block, flags=re.S)
    if loop:
      name, values, body = loop.groups()
      commands += [body.replace(f'${name}', value).strip() for value in values.split()]
    else:
      commands += [line.strip() for line in block.splitlines() if 'python -m' in line]
  return commands


def _run(command):
  """Runs one `python -m pause_lm.X --flag=value ...` command in this process."""
  args = shlex.split(command)
  module = args[args.index('-m') + 1]
  flags = gin_utils.rewrite_gin_args(args[args.index('-m') + 2 :])
  gin_files = [a.split('=', 1)[1] for a in flags if a.startswith('--gin_file=')]
  bindings = [a.split('=', 1)[1] for a in flags if a.startswith('--gin_bindings=')]
  options = dict(
    a[2:].split('=', 1) for a in flags if not a.startswith(('--gin_file=', '--gin_bindings='))
  )
  gin.clear_config()
  try:
    if module == 'pause_lm.convert' and 'from_hf' in options:
      return convert.from_hf(options['from_hf'], options['model_dir'])
    gin_utils.parse_gin(gin_files, bindings, ['.', os.fspath(gin_utils.REPO_ROOT)])
    if module == 'pause_lm.convert':
      return convert.to_hf(options['model_dir'], options['to_hf'], options.get('hf_base'))
    if module == 'pause_lm.train':
      return trainer.train()
    assert module == 'pause_lm.evaluate', command
    return evaluation.evaluate()
  finally:
    gin.clear_config()


def _pairs(first, count):
  return [
    {'question': f'what is {i % 10} plus {i % 7}?', 'answers': [str(i % 10 + i % 7), f'{i}!']}
    for i in range(first, first + count)
  ]


def _write_pairs(path, first, count):
  pq.write_table(pa.Table.from_pylist(_pairs(first, count)), path, row_group_size=8)


def _write_tokenizer(folder, vocab_size):
  """A tokenizer.json of `vocab_size` ids (EOS `<|endoftext|>` first), trained on the pairs."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tokenizer = Tokenizer(models.BPE(unk_token='<unk>'))
  tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
  tokenizer.decoder = decoders.Metaspace()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=['<|endoftext|>', '<unk>'])
  texts = [f'question: {p["question"]} answer: {" ".join(p["answers"])}' for p in _pairs(0, 200)]
  tokenizer.train_from_iterator(texts, trainer)
  assert tokenizer.get_vocab_size() == vocab_size
  tokenizer.save(os.fspath(folder / 'tokenizer.json'))


def test_walkthrough(tmp_path, monkeypatch):
  (tmp_path / 'hf_model').mkdir()
  for name in ('config.json', 'model.safetensors'):
    shutil.copy(os.path.join(DATA, HF_MODEL, name), tmp_path / 'hf_model')
  if PAUSE_ID == 400:  # the shared test tokenizer's size
    for name in ('tokenizer.json', 'tokenizer_config.json'):
      shutil.copy(os.path.join(DATA, 'tokenizer', name), tmp_path / 'hf_model')
  else:
    _write_tokenizer(tmp_path / 'hf_model', PAUSE_ID)
  (tmp_path / 'data').mkdir()
  _write_pairs(tmp_path / 'data' / 'train-00000.parquet', 0, 24)
  _write_pairs(tmp_path / 'data' / 'train-00001.parquet', 24, 24)
  _write_pairs(tmp_path / 'data' / 'validation-00000.parquet', 100, 12)
  (tmp_path / 'my_qa.gin').write_text(_blocks('gin')[0])
  monkeypatch.chdir(tmp_path)

  commands = _commands()
  assert [c.split()[2] for c in commands] == (
    ['pause_lm.convert', 'pause_lm.train'] + ['pause_lm.evaluate'] * 2 + ['pause_lm.convert']
  )
  config = _run(commands[0])
  assert config.num_embeddings == -(-(PAUSE_ID + 1) // 128) * 128  # + <pause>, padded

  # Pause-finetuned on the Parquet task that the gin file alone registered.
  result = _run(commands[1])
  history = dict(result.history)
  assert max(history) == 3 and all(np.isfinite(h['loss']) for h in history.values())

  for command, num_pauses in zip(commands[2:4], (0, 10)):
    outcome = _run(command)
    assert outcome.task == ('my_qa_pause10' if num_pauses else 'my_qa_std')
    assert outcome.num_pauses == num_pauses and outcome.num_examples == 12
    assert set(outcome.metrics) == {'em', 'f1'}
    record = outcome.records[0]
    assert record['prefix'].startswith('question: what is 0 plus 2? answer:')
    assert record['prefix'].count(vocab.PAUSE_TEXT) == num_pauses
    assert record['target'] == ['2', '100!']  # every accepted answer is scored against

  _run(commands[4])
  finetuned = convert.checkpoint_params('runs/my_qa_pauseft10', config)[1]
  exported_config, exported = hf.from_pretrained('hf_export')
  assert exported_config == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), exported, finetuned)
  hf_config = json.loads((tmp_path / 'hf_export' / 'config.json').read_text())
  original = json.loads((tmp_path / 'hf_model' / 'config.json').read_text())
  assert hf_config['pause_token_id'] == PAUSE_ID
  assert hf_config['model_type'] == original['model_type']
