"""Studies: arms (job configurations) crossed with seeds, and their tables.

What a study runs and writes: README, "Studies". `train.study` is the
command line; `spec` parses arms, `stats` holds the statistics, `figures`
reads a report, `runner` runs the cells and `summary` writes the outputs.
"""
