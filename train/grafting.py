"""Filter Grafting: N nets trained side by side in one process.

Example (the README's quick start):

    python -m train.grafting --flagfile=configs/quickstart.cfg
"""

from . import flags as flags_lib

flags_lib.define_job("grafting")

if __name__ == "__main__":
    flags_lib.run_job("grafting")
