"""Scheduled runs: cron ticks, and the crontab, systemd and Kubernetes configs emitted for them.

Import name: `slimline.pipelines.schedule` (this folder is `pipelines/schedule/` in the repository).
"""
