"""The ``kbgen`` command line. Each concern registers its commands on :data:`kbgen.cli.app.app`."""

from kbgen.cli.app import app, main

__all__ = ["app", "main"]
