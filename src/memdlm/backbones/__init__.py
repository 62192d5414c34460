"""Backbones: what memdlm knows about a model family and how a model is built or loaded.

The family table (``families``), loading and head hooks (``modeling``), remote-code
compatibility (``remote_code``, ``bidirectional``), LoRA runs as base + adapter (``lora``),
shipped models and hub-cache names (``shipped``), meta-device stand-ins (``stand_ins``),
the tokenizer, the context limit, gradient checkpointing and the split forward. Nothing
here knows about diffusion, memory, tasks or runs: everything above builds on it.
"""
