"""The `slimline` command line: the composition root that picks the adapters."""

from __future__ import annotations

import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slimline")
def main() -> None:
    """slimline: compress transformer models and get them ready to ship."""


@main.command()
def doctor() -> None:
    """Show the versions and ONNX Runtime providers slimline would use here."""
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime as ort

    from tasks.runtime import cuda_usable

    for pkg in ("torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime", "ray", "mlflow"):
        try:
            click.echo(f"{pkg:<16} {version(pkg)}")
        except PackageNotFoundError:
            continue
    click.echo(f"{'python':<16} {sys.version.split()[0]}")
    click.echo(f"{'providers':<16} {', '.join(ort.get_available_providers())}")
    click.echo(f"{'cuda usable':<16} {cuda_usable()}")


if __name__ == "__main__":
    main()
