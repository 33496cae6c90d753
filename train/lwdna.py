"""LW-DNA: widen a zoo net, shrink it by hypernetwork pruning, retrain it.

Example (widen x2, shrink, derive, train and export on the synthetic set):

    python -m train.lwdna --flagfile=configs/lwdna_quick.cfg

The derived widths land in <workdir>/channel_config.json, which records
the model, preset and shortcut; every other job accepts it with the same
three, e.g. `python -m train.baseline --model=resnet20 --preset=dhp
--channel_config=<workdir>/channel_config.json --workdir=...`. Another
preset or shortcut (e.g. leaving out `--preset=dhp`: CIFAR ResNets would
get option-A shortcuts) builds another network and is refused with a
one-line error.
"""

from absl import flags

from . import flags as flags_lib

flags_lib.define_job("lwdna")

if __name__ == "__main__":
    # LW-DNA widens the network first; x2 is the paper's setting.
    flags.FLAGS.set_default("width_mult", 2.0)
    flags_lib.run_job("lwdna")
