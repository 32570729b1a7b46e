"""Pure image work, run in decode workers: decode, thumbnails, prepare (no torch, no asyncio)."""
