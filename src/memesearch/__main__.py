"""`python -m memesearch` runs the command line."""

from memesearch.cli import main

main()
