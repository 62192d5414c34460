"""Trainers: Standard MDLM and MemDLM, on top of ``transformers.Trainer``."""
