"""``python -m tritonbp``: the same command line as the ``tritonbp`` script."""

from tritonbp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
