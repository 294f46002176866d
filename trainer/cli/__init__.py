"""The ``trainer`` command line. Each concern registers its commands on :data:`trainer.cli.app.app`."""

from trainer.cli.app import app, main

__all__ = ["app", "main"]
