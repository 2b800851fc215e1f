"""Quiet TensorFlow's C++ logs and keep generated artefacts in one shared cache for the run."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
