"""Methods layered over a backbone: the bare backbone, RLMRec's baselines and DaRec.

A backbone gives final embeddings (F_u, F_i) from an ego matrix and its own loss; a method may
transform the ego matrix (RLMRec-Gen's masking), owns extra parameters (an NNX module, e.g.
:class:`DarecHeads`, kept as its pure dict under ``params["method"]``) and adds its loss terms, in
the reference's order, after the backbone's.
Every random draw of a step comes from :meth:`Method.draw` so tests can inject it.
"""

from darec_jax.methods.base import Method, NoMethod
from darec_jax.methods.darec import Darec, DarecHeads
from darec_jax.methods.factory import make_method
from darec_jax.methods.rlmrec import RlmrecCon, RlmrecConParams, RlmrecGen, RlmrecGenParams

__all__ = [
    "Darec",
    "DarecHeads",
    "Method",
    "NoMethod",
    "RlmrecCon",
    "RlmrecConParams",
    "RlmrecGen",
    "RlmrecGenParams",
    "make_method",
]
