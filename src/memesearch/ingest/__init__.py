"""The write path: scan the library, diff it with the store, decode in a pool, one pass, live."""
