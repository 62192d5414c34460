"""Decoding: the iterative denoising sampler (``sampler``), the block-wise key/value caches
(``block_cache``, ``encoder_cache``) and batched generation with an optional prompt memory
(``generation``)."""
