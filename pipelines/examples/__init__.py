"""Example specs shipped with slimline."""
