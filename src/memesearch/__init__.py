"""memesearch: semantic search over a folder of memes with SigLIP, FAISS and SQLite."""

import os

# FAISS, OpenBLAS and torch share GNU OpenMP. After each parallel region its threads spin for up
# to 300,000 turns (billions under OMP_WAIT_POLICY=active) before sleeping, and on a machine
# with as many OpenMP threads as cores that spinning takes the CPU from the thread answering the
# next HTTP request: one search over 100k vectors took 12.9 ms at p50 instead of 3.9 ms
# (docs/performance.md). 10,000 turns keep nearly all of the model's CPU throughput. libgomp
# reads this once, when it is loaded, so it is set before anything imports faiss or torch; a
# value the user set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
