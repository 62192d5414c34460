"""One module per CLI subcommand; each exposes ``run(argv, prog) -> int``."""
