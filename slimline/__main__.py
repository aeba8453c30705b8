"""`python -m slimline`: the same command line as the `slimline` console script."""

from slimline.cli.main import main

if __name__ == "__main__":
    main()
