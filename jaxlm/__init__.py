"""jaxlm: a JAX/Flax codebase for the whole life cycle of a large language model."""

__version__ = '0.1.0'
