"""Cython kernels: one extension per concept, each a batched nogil loop over typed memoryviews."""
