"""`python -m slimline`: the same command line as the `slimline` console script."""

from slimline.pipelines.cli import main

if __name__ == "__main__":
    main()
