"""The one exception the store raises for things a user can fix."""


class StoreError(ValueError):
    """A store operation cannot proceed; the message is one line saying what is wrong and what to do."""
