"""Studies: arms (job configurations) crossed with seeds, and their tables.

A study runs every (arm, seed) cell as an ordinary job in its own workdir
(`<study>/<arm>/seed_<seed>`), so each cell resumes like any job, then
aggregates the cells' `report.json` files into `study.json`, `study.md`
and `study.png`: mean and sample standard deviation per arm, and for each
paired comparison the mean paired difference over seeds with a 95%
t-interval. `train.study` is the command line; `spec` parses arms,
`stats` holds the statistics, `figures` reads a report, `runner` runs the
cells and `summary` writes the outputs.
"""
