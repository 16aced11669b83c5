"""Training objectives: what a batch holds beyond the model's inputs, and the loss over the model's
output (jaxlm/objectives/base.py)."""
