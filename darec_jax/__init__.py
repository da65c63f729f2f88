"""DaRec and the RLMRec baselines on graph collaborative-filtering backbones, in JAX/Flax."""

__version__ = "0.1.0"
