"""The masked diffusion objective: noise schedules, masking kernels, the loss's weighting
and normalisation, and the forward process (``process``: a noised batch and the MDLM loss)."""
