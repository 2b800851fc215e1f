"""Runs docs/pretrained.md's walkthrough, its own commands and module, on tiny artefacts.

The page's `python -m pause_lm.{convert,train,evaluate}` commands are read from its sh blocks
and run in this process (same flags, same gin files and bindings), its module and gin file are
written from its python and gin blocks, and the working folder holds a tiny random SmolLM-shaped
checkpoint (tests/testdata/hf/smollm + the test tokenizer) and a small text corpus.
"""

import json
import os
import re
import shlex
import shutil
import sys

import gin
import jax
import numpy as np

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.hf import convert
from pause_lm.evaluation import evaluator as evaluation
from pause_lm.runtime import gin_utils
from pause_lm.hf import models as hf
from pause_lm.training import trainer
from pause_lm.data import vocab

DOC = os.path.join(gin_utils.REPO_ROOT, 'docs', 'pretrained.md')
DATA = os.path.join(os.path.dirname(__file__), 'testdata', 'hf')
PAUSE_ID = 400  # the test tokenizer's and checkpoint's 400 ids, then <pause>


def _blocks(kind):
  return re.findall(rf'```{kind}\n(.*?)```', open(DOC).read(), flags=re.S)


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


def _load(model_dir, config):
  return convert.checkpoint_params(model_dir, config)[1]


def test_walkthrough(tmp_path, monkeypatch):
  shutil.copytree(os.path.join(DATA, 'smollm'), tmp_path / 'hf_model')
  for name in os.listdir(os.path.join(DATA, 'tokenizer')):
    if name.startswith('tokenizer'):
      shutil.copy(os.path.join(DATA, 'tokenizer', name), tmp_path / 'hf_model')
  (tmp_path / 'corpus').mkdir()
  for i in range(4):
    (tmp_path / 'corpus' / f'notes_{i}.txt').write_text(
      ' '.join(
        f'Note {i}.{k}: the model thinks before it speaks, 1234 + {k} = {1234 + k}.'
        for k in range(12)
      )
    )
  (tmp_path / 'walkthrough_tasks.py').write_text(_blocks('python')[1])
  (tmp_path / 'walkthrough.gin').write_text(_blocks('gin')[0])
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(os.fspath(tmp_path))
  monkeypatch.delitem(sys.modules, 'walkthrough_tasks', raising=False)

  commands = _commands()
  assert [c.split()[2] for c in commands] == (
    ['pause_lm.convert'] + ['pause_lm.train'] * 2 + ['pause_lm.evaluate'] * 3 + ['pause_lm.convert']
  )

  # 1. Convert: an INIT_CHECKPOINT with the <pause> row at id 400 of 512 rows.
  config = _run(commands[0])
  assert (config.num_embeddings, config.tie_embeddings, config.num_kv_heads) == (512, True, 2)
  converted = _load('runs/converted', config)
  table = np.asarray(converted['token_embed']['embedding'])
  np.testing.assert_allclose(table[PAUSE_ID], table[:PAUSE_ID].mean(axis=0), atol=1e-6)

  # 3. Continue pretraining with pauses from the converted weights.
  result = _run(commands[1])
  history = dict(result.history)
  assert max(history) == 3 and np.isfinite(history[3]['loss'])
  assert 0.05 <= history[3]['pause_share'] <= 0.15  # Algorithm 1's 10% of the inputs
  pretrained = _load('runs/pausept', config)
  # It started from the HF weights: three small Adam steps away, not a fresh initialisation.
  moved = np.abs(
    np.asarray(pretrained['token_embed']['embedding'])[:PAUSE_ID] - table[:PAUSE_ID]
  ).max()
  assert 0 < moved < 0.02

  # 4. Pause-finetune; 5. evaluate at M = 0, 5, 10.
  _run(commands[2])
  for command, num_pauses in zip(commands[3:6], (0, 5, 10)):
    outcome = _run(command)
    assert outcome.num_pauses == num_pauses and outcome.num_examples == 16
    assert 'accuracy' in outcome.metrics
    prefix = outcome.records[0]['prefix']
    assert prefix.count(vocab.PAUSE_TEXT) == num_pauses, prefix

  # 6. Export: identical parameters back through from_pretrained, <pause> in the tokenizer.
  _run(commands[6])
  finetuned = _load('runs/pauseft', config)
  exported_config, exported = hf.from_pretrained('hf_export')
  assert exported_config == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), exported, finetuned)
  hf_config = json.loads((tmp_path / 'hf_export' / 'config.json').read_text())
  assert hf_config['pause_token_id'] == PAUSE_ID and hf_config['eos_token_id'] == 1
  import tokenizers

  tokenizer = tokenizers.Tokenizer.from_file('hf_export/tokenizer.json')
  assert tokenizer.encode('sum of 3 and 4 is<pause><pause>').ids[-2:] == [PAUSE_ID] * 2
  assert checkpointing.resolve_checkpoint('runs/pauseft').name == '3'
