"""Transformer building blocks (Flax Linen). Each parameter carries logical axis names."""
