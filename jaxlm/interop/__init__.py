"""Checkpoint interop with other frameworks (Hugging Face transformers)."""

from jaxlm.interop.hf import ConversionError, from_hf, to_hf

__all__ = ['ConversionError', 'from_hf', 'to_hf']
