"""Talking to LLMs: prompt templates, answer schemas, the OpenAI-compatible client, the embedded server."""
