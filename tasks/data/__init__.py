"""Data files shipped with slimline (the built-in English corpus)."""
