"""kbgen: build, inspect and fix LLM knowledge bases about action classes, and write knowledge packs."""

__version__ = "0.1.0"
