"""LLM-backed workers: the OpenAI-compatible chat client, tolerant reply parsing, model prices, and the small-model followers."""
