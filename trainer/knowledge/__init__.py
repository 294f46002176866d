"""Knowledge the trainer consumes: the knowledge pack written by ``kbgen embed`` (see ``pack.py``)."""
