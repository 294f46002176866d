"""``python -m trainer`` (the way the GPU machines run it from the checkout)."""

from trainer.cli import main

main()
