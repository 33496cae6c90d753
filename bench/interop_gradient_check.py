"""Do LW-DNA search gradients depend on TensorFlow's inter-op threads?

A detector for the wrong latent gradient once reported with two inter-op
threads and oneDNN (README, Performance: "One op at a time with oneDNN"; not
reproduced so far). It builds the hypernet of
`tests/lwdna/lwdna_test.py::test_search_steps_and_latent_gradients`, takes
the latent gradients eagerly, then runs the search (4 steps per call,
learning rate 0, so the weights never move) `--repeats` times in one process
and prints how many bitwise-distinct gradient sets the search produced and
how far the worst one is from the eager gradient (relative to its norm). Float
rounding alone gives one distinct set at about 1e-6; a race gives more
sets, or a deviation far above 1e-4.

    TF_NUM_INTEROP_THREADS=2 python bench/interop_gradient_check.py

Set the variable (and `TF_ENABLE_ONEDNN_OPTS`, `TF_NUM_INTRAOP_THREADS`) on
the command line: TensorFlow reads them when it loads. Run it on an idle
machine: a race needs two threads running at the same time.
"""

import hashlib
import os

# Before TensorFlow loads: tfgraft's oneDNN defaults (tfgraft/__init__.py).
import tfgraft  # noqa: F401, I001

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tfgraft import lwdna  # noqa: E402
from tfgraft import models  # noqa: E402
from tfgraft.training import optimizers  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 200, "Search calls (4 steps each).")
_TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-4, "Count gradients further than this from eager ones."
)


def main(argv):
    del argv
    lwdna.latent_plan("resnet20", preset="dhp")
    keras.utils.set_random_seed(0)
    net = lwdna.build_hypernet(
        "resnet20",
        channel_config=models.default_channel_config("resnet20").scaled(0.25),
        embedding_dim=2,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    rng = np.random.default_rng(8)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, 16).astype("int32")
    keys = list(net.latents)
    with tf.GradientTape() as tape:
        logits = net.model(images, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        )
    eager = tape.gradient(loss, [net.latents[k] for k in keys])
    eager = [g.numpy() for g in eager]
    batches = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    # `lwdna.run_search`'s trainer and optimizer, built once (no retracing).
    trainer = lwdna.SearchTrainer(
        net.model,
        optimizers.TorchSGD(0.0, momentum=0.9, weight_decay=1e-4),
        tf.distribute.get_strategy(),
        latents=net.latents,
        global_batch_size=16,
    )
    digests = set()
    worst, far = 0.0, 0
    for _ in range(_REPEATS.value):
        trainer.train_loop([batches], 4)
        grads = [trainer.latent_grads[k].numpy() for k in keys]
        digests.add(hashlib.sha1(b"".join(g.tobytes() for g in grads)).digest())
        errors = [
            np.linalg.norm(g - e) / np.linalg.norm(e)
            for g, e in zip(grads, eager)
        ]
        worst = max(worst, max(errors))
        far += max(errors) > _TOLERANCE.value
    def env(name):
        return os.environ.get(name, "unset")

    print(
        f"TF_NUM_INTEROP_THREADS={env('TF_NUM_INTEROP_THREADS')}, "
        f"TF_NUM_INTRAOP_THREADS={env('TF_NUM_INTRAOP_THREADS')}, "
        f"TF_ENABLE_ONEDNN_OPTS={env('TF_ENABLE_ONEDNN_OPTS')}: "
        f"{_REPEATS.value} searches, {len(digests)} distinct gradient sets, "
        f"worst deviation from eager {worst:.1e}, "
        f"{far} above {_TOLERANCE.value:g}"
    )


if __name__ == "__main__":
    app.run(main)
