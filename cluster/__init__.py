"""Where slimline runs: the Ray executor, resources, job submission and cluster configs."""
