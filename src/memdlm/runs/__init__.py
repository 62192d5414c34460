"""A run's life: the run directory's contract (``directory``), a finished or unfinished run
loaded as model, tokenizer, settings and prompt memory (``run``), and where inference places
it (``placement``: device and precision)."""
