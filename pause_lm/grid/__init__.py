"""Experiment grids: the spec (`spec`), running it (`runner`) and the paper-style report
(`report`). Light: no JAX or TensorFlow, so planning and reporting start in a second."""

from pause_lm.grid.spec import Command
from pause_lm.grid.spec import EvalKey
from pause_lm.grid.spec import expand
from pause_lm.grid.spec import Finetune
from pause_lm.grid.spec import finetune_variants
from pause_lm.grid.spec import gin_value
from pause_lm.grid.spec import Grid
from pause_lm.grid.spec import GRID_FILE
from pause_lm.grid.spec import inference_pauses
from pause_lm.grid.spec import LABELS
from pause_lm.grid.spec import parse_eval_path
from pause_lm.grid.spec import parse_finetune
from pause_lm.grid.spec import pretrain_dir
from pause_lm.grid.spec import PRETRAIN_VARIANTS
from pause_lm.grid.spec import Run
