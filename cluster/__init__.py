"""Where slimline runs: the Ray executor, Ray Tune searcher, Ray Serve app, job submission, KubeRay.

Import name: `slimline.cluster` (this folder is `cluster/` in the repository).
"""
