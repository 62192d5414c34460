"""Data: row formats, tokenisation, packing, synthetic task data and collation."""
