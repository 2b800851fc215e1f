r"""Throughput of the lm-evaluation-harness backend: requests/s for each request type, and the
number of programs compiled (one per bucket width and request type).

  python benchmarks/harness.py                       # the tiny model, on this machine
  python benchmarks/harness.py --models=tiny,130m    # and the 130M decoder (slow on a CPU)

Fresh random parameters (throughput does not depend on their values) and the embedded
synthetic corpus's tokenizer; the requests are the offline demo tasks' (pause_synthetic_qa's
prompts, pause_synthetic_choice's four candidates after `--num_fewshot` solved examples as
lm-eval's few-shot contexts have them, pause_synthetic_text's documents), sent
straight to the backend (`PauseLM.loglikelihood` etc.), as lm-eval's evaluator sends them. Each
request type runs twice: the first pass compiles, the second is timed. `loglikelihood` shares
each question's prefill among its candidates; `loglikelihood_whole_rows` scores the same
requests with `share_prefixes=False`.
"""

import argparse
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from pause_lm.data import synthetic
from pause_lm.data import variants
from pause_lm.data import vocab as vocab_lib
from pause_lm.harness import backend
from pause_lm.harness import engine
from pause_lm.harness import loading
from pause_lm.model.transformer import Decoder, ModelConfig
from pause_lm.runtime import sharding
from lm_eval.api.instance import Instance
# pylint: enable=g-import-not-at-top,wrong-import-position

MODELS = {
  'tiny': dict(num_layers=2, num_heads=2, emb_dim=64, mlp_dim=128),
  '130m': dict(num_layers=12, num_heads=12, emb_dim=768, mlp_dim=3072),
}


def _fewshot_context(question: dict, num_fewshot: int, index: int) -> str:
  """lm-eval's few-shot context: solved training examples, then the question."""
  shots = [synthetic.choice_example('train', index * num_fewshot + k) for k in range(num_fewshot)]
  solved = [f'{s["inputs"]} {s["candidates"][s["label"]]}' for s in shots]
  return '\n\n'.join([*solved, question['inputs']])


def _requests(num, num_fewshot):
  qa = [synthetic.qa_example('validation', i) for i in range(num)]
  choice = [synthetic.choice_example('validation', i) for i in range(max(num // 4, 1))]
  return {
    'loglikelihood': [
      Instance('loglikelihood', {}, (_fewshot_context(c, num_fewshot, i), ' ' + cand), i)
      for i, c in enumerate(choice)
      for cand in c['candidates']
    ],
    'generate_until': [
      Instance('generate_until', {}, (q['inputs'], {'until': ['\n'], 'max_gen_toks': 8}), i)
      for i, q in enumerate(qa)
    ],
    'loglikelihood_rolling': [
      Instance('loglikelihood_rolling', {}, (synthetic.document('validation', i),), i)
      for i in range(num)
    ],
  }


def measure(
  name: str, num_requests: int, batch_size: int, num_pauses: int, num_fewshot: int
) -> dict:
  vocabulary = synthetic.synthetic_vocabulary()
  config = ModelConfig(
    num_embeddings=vocab_lib.num_embeddings(vocabulary), max_len=256, **MODELS[name]
  )
  params = jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  model = loading.LoadedModel(
    params=params['params'],
    config=config,
    vocabulary=vocabulary,
    prefix_lm=True,
    variant=variants.Variant('pause', num_pauses) if num_pauses else None,
    sequence_length=256,
    mesh=sharding.create_mesh(),
  )
  lm = backend.PauseLM(model=model, batch_size=batch_size, progress=False)
  out = {
    'model': name,
    'num_pauses': num_pauses,
    'batch_size': lm.batch_size,
    'num_fewshot': num_fewshot,
  }
  requests = _requests(num_requests, num_fewshot)
  for kind, reqs in requests.items():
    out[kind] = _timed(getattr(lm, kind), reqs)
  # The same candidates with every row scored whole (no shared prefill): what sharing saves.
  lm.engine.share_prefixes = False
  out['loglikelihood_whole_rows'] = _timed(lm.loglikelihood, requests['loglikelihood'])
  out['programs'] = engine.compiled_programs()
  return out


def _timed(run, reqs) -> dict:
  """Runs `reqs` twice: the first pass compiles, the second is timed."""
  before = sum(engine.compiled_programs().values())
  start = time.perf_counter()
  run(reqs)
  first = time.perf_counter() - start
  compiles = sum(engine.compiled_programs().values()) - before
  start = time.perf_counter()
  run(reqs)
  seconds = time.perf_counter() - start
  return {
    'requests': len(reqs),
    'requests_per_sec': round(len(reqs) / seconds, 1),
    'first_pass_sec': round(first, 2),
    'programs_compiled': compiles,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='tiny', help='comma-separated: tiny, 130m')
  parser.add_argument('--num_requests', type=int, default=64)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--num_pauses', type=int, default=10)
  parser.add_argument(
    '--num_fewshot', type=int, default=3, help='solved examples before each choice question'
  )
  args = parser.parse_args()
  print(json.dumps({'devices': [str(d) for d in jax.devices()]}))
  for name in args.models.split(','):
    print(
      json.dumps(
        measure(name, args.num_requests, args.batch_size, args.num_pauses, args.num_fewshot)
      )
    )


if __name__ == '__main__':
  main()
