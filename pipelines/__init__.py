"""What to run and how to judge it: spec, plan, run, select, report, and the CLI."""
