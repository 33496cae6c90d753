"""L1-norm filter pruning (Li et al., ICLR 2017) to a FLOPs cut, fine-tuned.

Examples:

    python -m train.l1prune --flagfile=configs/l1prune_quick.cfg

    # From a finished baseline run, at the stripe job's FLOPs convention:
    python -m train.l1prune --model=resnet20 --preset=pff \
        --pretrained=runs/resnet20_pff --target_flops_cut=0.7 --epochs=30 \
        --workdir=runs/resnet20_l1_70
"""

from . import flags as flags_lib

flags_lib.define_job("l1prune")

if __name__ == "__main__":
    flags_lib.run_job("l1prune")
