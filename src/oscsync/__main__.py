"""``python -m oscsync`` runs the command-line interface."""

from oscsync.cli.main import main

if __name__ == "__main__":
    main()
