"""The ``vlm-studio`` command: :func:`main` parses the arguments and runs one command
(:mod:`studio.cli.commands`; the representation commands in :mod:`studio.cli.representations`)."""
from studio.cli.commands import main

__all__ = ["main"]
