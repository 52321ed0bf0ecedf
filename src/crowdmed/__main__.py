"""Run the command-line interface: ``python -m crowdmed``."""

from crowdmed.cli import main

if __name__ == "__main__":
    main()
