"""memdlm: masked diffusion language models with MemDLM parametric memory.

Importing the package is cheap: it pulls in neither transformers, lm-eval nor
matplotlib. Import the submodules you need (``memdlm.diffusion.masking``,
``memdlm.training``, ``memdlm.sampling.sampler``, ...).
"""

__version__ = "0.1.0"
