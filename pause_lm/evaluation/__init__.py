"""SeqIO evaluation of a checkpoint at any inference-time M, once or during training."""

from pause_lm.evaluation.evaluator import evaluate
from pause_lm.evaluation.evaluator import load_params
from pause_lm.evaluation.evaluator import periodic_evaluator
from pause_lm.evaluation.evaluator import TaskEvaluator
