"""The embedded corpus's SentencePiece vocabulary: deterministic, and trained only when used."""

import json
import os

import seqio

from pause_lm.data import synthetic
from pause_lm.data import vocab as vocab_lib

from conftest import run_python

# The ids and file name that the vocabulary had when it was trained at import (before it
# became lazy): the lazy one must train the same model into the same cache file.
TEXT = 'which is the largest ? 81\nsort 81 7 : 7 81'
IDS = [64, 54, 60, 66, 7, 139, 142, 140, 43, 139, 142, 140, 139, 143, 6, 139, 143, 139, 142, 140]
VOCAB_SIZE = 184  # 183 pieces (hard_vocab_limit=False) and the pause.
MODEL_FILE = 'synthetic_spm_b5c028bbc636.model'

# Run in a fresh process, since this one has registered the tasks already.
_SCRIPT = f"""
import json, os, pickle
import seqio
import pause_lm.tasks

cache = os.environ["PAUSE_LM_CACHE"]
listing = lambda: sorted(os.listdir(cache)) if os.path.isdir(cache) else []
pause_lm.tasks.ensure_registered("synthetic_qa_pause10")
task = seqio.get_mixture_or_task("synthetic_qa_pause10")
vocabulary = task.output_features["targets"].vocabulary
pretraining = seqio.get_mixture_or_task("synthetic_std_pretrain")
copied = pickle.loads(pickle.dumps(vocabulary))
registered = listing()
ids = copied.encode({TEXT!r})
print(json.dumps({{"registered": registered, "used": listing(), "ids": ids,
                  "again": vocabulary.encode({TEXT!r}), "vocab_size": vocabulary.vocab_size,
                  "shared": vocabulary is pretraining.output_features["targets"].vocabulary,
                  "equal": copied == vocabulary}}))
"""


def test_tasks_register_without_training_and_train_on_first_use(tmp_path):
  env = dict(os.environ, PAUSE_LM_CACHE=str(tmp_path / 'cache'))
  result = run_python('-c', _SCRIPT, env=env)
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['registered'] == []
  assert out['used'] == [MODEL_FILE]
  assert out['ids'] == out['again'] == IDS
  assert out['vocab_size'] == VOCAB_SIZE
  assert out['shared'] and out['equal']


def test_synthetic_sentencepiece_is_deterministic(tmp_path, monkeypatch):
  paths = []
  for run in ('a', 'b'):
    monkeypatch.setenv('PAUSE_LM_CACHE', str(tmp_path / run))
    paths.append(synthetic.sentencepiece_model_path())
  first, second = (open(p, 'rb').read() for p in paths)
  assert first == second
  v = vocab_lib.PauseVocabulary(seqio.SentencePieceVocabulary(paths[0]))
  doc = synthetic.document('train', 3)
  assert v.decode(v.encode(doc)) == ' '.join(doc.split())
