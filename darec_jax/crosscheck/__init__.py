"""Where the JAX implementation and the PyTorch reference meet — the only package that imports
both.

* :mod:`~darec_jax.crosscheck.interop`: our parameter tree ↔ the reference's ``state_dict``
  names (NumPy; torch only to read or write ``.pt`` files).
* :mod:`~darec_jax.crosscheck.factory`: the reference model of a :class:`darec_jax.config.Config`.
* :mod:`~darec_jax.crosscheck.harness`: step-by-step comparison of training on both sides with
  every random draw injected into both (``python -m experiments.equivalence``).

The reference itself (:mod:`darec_jax.reference`) imports torch, numpy and scipy only; the rest
of ``darec_jax`` never imports torch (``tests/test_import_boundaries.py``).
"""
