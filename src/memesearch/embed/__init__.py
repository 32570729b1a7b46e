"""Embedding models and the micro-batcher in front of them."""
