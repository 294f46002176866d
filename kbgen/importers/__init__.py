"""Importers of published knowledge bases into the kbgen database."""
