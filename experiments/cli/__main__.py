"""`python -m experiments.cli ARGS`: the same as `clv ARGS`."""

from .main import main

if __name__ == "__main__":  # pragma: no cover
    main()
