"""SeqIO task registrations (installed as `pause_lm.tasks`; importing registers them all).

- `pretraining`: C4 and the embedded synthetic corpus, standard and pause variants.
- `downstream`: finetuning/evaluation tasks and their pause variants (any M, placement, filler),
  and the offline synthetic ones.
- `paper`: the paper's nine downstream tasks (TFDS, and CommonSenseQA's JSONL files).
- `text_sources`: sources for your own pretraining text (text files, JSONL), registered with
  `register_pretraining_task` (docs/own_data.md).
- `file_tasks`: downstream tasks from your own JSONL, CSV or Parquet files, registered with
  `register_file_task` or gin's `file_task` alone (docs/own_data.md).

Register your own tasks in a module of your own and import it from a gin file; see
docs/custom_tasks.md.
"""

from pause_lm.tasks import downstream
from pause_lm.tasks import registry
from pause_lm.tasks import paper
from pause_lm.tasks import pretraining
from pause_lm.tasks import text_sources
from pause_lm.tasks import file_tasks
from pause_lm.tasks.downstream import declare_downstream_task
from pause_lm.tasks.downstream import eval_task_name
from pause_lm.tasks.downstream import finetune_task
from pause_lm.tasks.downstream import is_scoring
from pause_lm.tasks.downstream import register_downstream_task
from pause_lm.tasks.downstream import register_pause_variant
from pause_lm.tasks.downstream import target_length
from pause_lm.tasks.file_tasks import file_task
from pause_lm.tasks.file_tasks import register_file_task
from pause_lm.tasks.pretraining import register_pretraining_task
from pause_lm.tasks.registry import ensure_registered
from pause_lm.tasks.registry import known_names
from pause_lm.tasks.text_sources import jsonl_source
from pause_lm.tasks.text_sources import text_files_source
