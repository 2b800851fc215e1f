"""docs/custom_tasks.md works as written: its module, imported by its gin file, finetunes and
evaluates through the real commands."""

import json
import re

from conftest import REPO, run_python

# The tests' small model, after the run file.
SMALL_MODEL = (
  '--gin_file=gin/experiments/tiny_test_model.gin',
  '--gin_bindings=ModelConfig.max_len = 64',
)


def _code_block(language):
  text = (REPO / 'docs' / 'custom_tasks.md').read_text()
  return re.search(rf'```{language}\n(.*?)```', text, re.S).group(1)


def _run(module, *args, pythonpath):
  return run_python('-m', module, *args, *SMALL_MODEL, pythonpath=pythonpath)


def test_documented_custom_task_finetunes_and_evaluates(tmp_path):
  (tmp_path / 'my_tasks.py').write_text(_code_block('python'))
  (tmp_path / 'my_tasks.gin').write_text(_code_block('gin'))
  gin_file = f'--gin_file={tmp_path / "my_tasks.gin"}'
  model_dir = tmp_path / 'run'
  _run(
    'pause_lm.train',
    '--gin_file=gin/pauseft.gin',
    gin_file,
    f"--gin.MODEL_DIR='{model_dir}'",
    '--gin.INIT_CHECKPOINT=None',
    "--gin.BASE_TASK='my_sum'",
    '--gin.NUM_PAUSES=4',
    '--gin.SEQUENCE_LENGTH=32',
    '--gin.TRAIN_STEPS=4',
    '--gin.BATCH_SIZE=8',
    '--gin.LEARNING_RATE=1e-3',
    '--gin.WARMUP_STEPS=1',
    '--gin.EVAL_EVERY_STEPS=None',
    pythonpath=tmp_path,
  )
  out = tmp_path / 'eval'
  result = _run(
    'pause_lm.evaluate',
    '--gin_file=gin/evaluate.gin',
    gin_file,
    f"--gin.CHECKPOINT_PATH='{model_dir}'",
    "--gin.TASK='my_sum_pause4'",
    '--gin.NUM_INFERENCE_PAUSES=2',
    '--gin.NUM_EXAMPLES=6',
    f"--gin.EVAL_OUTPUT_DIR='{out}'",
    pythonpath=tmp_path,
  )
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert printed['task'] == 'my_sum_pause2' and printed['num_examples'] == 6
  metrics = json.loads((out / 'metrics.json').read_text())
  assert set(metrics['metrics']) == {'accuracy'}
  records = [json.loads(line) for line in (out / 'predictions.jsonl').read_text().splitlines()]
  assert records[0]['prefix'].startswith('sum ') and records[0]['prefix'].count('<pause>') == 2
