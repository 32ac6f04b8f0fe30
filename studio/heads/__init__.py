"""Methods that read the model one attention head at a time.

- :mod:`studio.heads.sav`: Sparse Attention Vectors (Mitra et al. 2025), few-shot classifiers
  from the output of a handful of chosen heads at the last prompt position.
"""
