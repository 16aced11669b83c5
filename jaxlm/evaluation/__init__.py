"""Evaluation: request types scored by a jaxlm model (lm.py) and a registry of tasks (tasks/)."""
