"""The kbgen database: engine/sessions (:mod:`.db`), models (:mod:`.models`), the API (:mod:`.repo`)."""

from kbgen.store.db import get_engine, session_scope
from kbgen.store.errors import StoreError

__all__ = ["StoreError", "get_engine", "session_scope"]
