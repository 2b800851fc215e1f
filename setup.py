"""pause-lm: pretrain, finetune and evaluate decoder-only LMs with <pause> tokens.

`t5` is deliberately *not* an install requirement: `pip install t5==0.9.4` drags in
`seqio-nightly` and `tfds-nightly`, which write the same import packages (`seqio`,
`tensorflow_datasets`) as `seqio` and `tensorflow-datasets`, so the code you get would depend
on install order. The Makefile installs t5 with `--no-deps` after this package, and its real
runtime needs are listed here instead (see README, "Why t5 is installed with --no-deps").
"""

import setuptools

INSTALL_REQUIRES = [
  'jax>=0.9',
  'flax>=0.12',
  'optax>=0.2.5',
  'orbax-checkpoint>=0.11',
  'clu>=0.0.12',
  'tensorboard',  # clu.metric_writers imports it; TF 2.21 no longer brings it in
  'gin-config>=0.5',
  'seqio>=0.0.19',
  'tensorflow-datasets>=4.9.9',
  'tensorflow>=2.19',
  'tensorflow-text>=2.19',
  'sentencepiece>=0.2',
  'numpy',
  # Hugging Face checkpoints and tokenizers in and out (never torch or transformers).
  'safetensors>=0.4',
  'tokenizers>=0.19',
  'pyarrow>=12',  # Parquet (and CSV) files of downstream file tasks (tasks/file_tasks.py)
  'tqdm',
  'matplotlib',
  # Runtime needs of t5's metrics and preprocessors (t5 itself: see the module docstring).
  'babel',
  'rouge-score',
  'sacrebleu',
  'scikit-learn',
  'editdistance',
  'nltk',
]

# lm-eval without extras pulls datasets, evaluate, sacrebleu, ... and no torch.
HARNESS = 'lm-eval==0.4.13'

setuptools.setup(
  name='pause_lm',
  version='0.1.0',
  description='Pause-token training for decoder-only language models in JAX/Flax.',
  python_requires='>=3.11',
  # The repository keeps SeqIO task registrations in the top-level `tasks/` folder (one job
  # per folder); they install and import as `pause_lm.tasks`.
  packages=[*setuptools.find_packages(include=['pause_lm', 'pause_lm.*']), 'pause_lm.tasks'],
  package_dir={'pause_lm': 'pause_lm', 'pause_lm.tasks': 'tasks'},
  # The harness's lm-eval task files (YAML, and the Python functions they name).
  package_data={'pause_lm.harness': ['tasks/*/*.yaml', 'tasks/*/*.py']},
  install_requires=INSTALL_REQUIRES,
  extras_require={
    # The lm-evaluation-harness backend (pause_lm/harness, docs/harness.md): never torch.
    'harness': [HARNESS],
    # The tests cover the harness backend too, so CI installs lm-eval. pytest < 9: pytest 9
    # computes node ids, and pytest-xdist (3.8) marks a test's xdist_group by rewriting its
    # node id, so under pytest 9 `--dist loadgroup` groups nothing and a group's session
    # fixture (the 8-device process) runs on every worker (tests/conftest.py checks this).
    'test': ['pytest>=8,<9', 'hypothesis>=6', 'pytest-xdist', 'ruff', HARNESS],
    # Accelerator builds of jax; install on top of the base set-up (see README).
    'tpu': ['jax[tpu]'],
    'cuda': ['jax[cuda12]'],
    # benchmarks/vs_pytorch.py's peer only: never a runtime or test dependency.
    'bench': ['torch', 'transformers'],
  },
)
