"""The input pipeline: a registered task by name in, batches of model features out."""
