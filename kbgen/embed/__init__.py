"""Text embeddings and knowledge packs.

``encoder`` (torch/transformers only), ``cache`` (content-hash cache in the database) and
``pack_writer`` (the ``*.kpack.safetensors`` file the trainer reads). Nothing is imported here so
that the encoder stays importable on machines without the kbgen database stack.
"""
