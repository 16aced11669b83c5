"""Decoding from trained models."""
