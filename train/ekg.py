"""EKG: search a sub-network of a pretrained net, then fine-tune it.

Examples:

    # From a finished baseline run:
    python -m train.ekg --flagfile=configs/ekg_cifar10_resnet56.cfg \
        --pretrained=runs/resnet56 --workdir=runs/resnet56_ekg

    # Pretrain, search and fine-tune in one go (<workdir>/pretrain):
    python -m train.ekg --flagfile=configs/ekg_quick.cfg --workdir=/tmp/ekg
"""

from . import flags as flags_lib

flags_lib.define_job("ekg")

if __name__ == "__main__":
    flags_lib.run_job("ekg")
