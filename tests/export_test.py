"""tfgraft.export: the SavedModel contract and one trace per architecture."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfgraft import export as export_lib
from tfgraft.models import build_model
from tfgraft.training import evaluation


def _net(seed, name, width_mult=0.25):
    keras.utils.set_random_seed(seed)
    net = build_model("resnet20", width_mult=width_mult, model_name=name)
    # Moving statistics away from their initial values, so that a swap
    # of non-trainable weights would show in the outputs.
    x = np.random.default_rng(seed).uniform(0, 255, (8, 32, 32, 3))
    net(x.astype("float32"), training=True)
    for v in net.non_trainable_variables:
        v.assign(v + np.float32(0.1 * seed))
    return net


def _images(seed=0, n=3):
    x = np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3))
    return np.round(x).astype("float32")


class ExporterTest(tf.test.TestCase):
    def test_nets_of_one_architecture_share_one_trace(self):
        nets = [_net(1, "net_0"), _net(2, "net_1"), _net(3, "best")]
        exporter = export_lib.Exporter()
        root = self.get_temp_dir()
        paths = [
            exporter.export(net, os.path.join(root, f"n{i}"))
            for i, net in enumerate(nets)
        ]
        # `serve` traced the model once; `serve_uint8` calls it.
        self.assertEqual(exporter.traces, 1)
        self.assertCountEqual(exporter.seconds, paths)
        x = _images()
        outputs = []
        for net, path in zip(nets, paths):
            loaded = tf.saved_model.load(path)  # keep: it owns the vars
            want = net(x, training=False).numpy()
            got = loaded.serve(x).numpy()
            self.assertAllClose(got, want, atol=1e-4)
            self.assertAllClose(
                loaded.serve_uint8(x.astype("uint8")), want, atol=1e-4
            )
            sig = loaded.signatures["serving_default"]
            self.assertAllClose(sig(images=x)["output_0"], want, atol=1e-4)
            outputs.append(got)
        # Each export has its own net's weights, not the first one's.
        self.assertGreater(np.abs(outputs[0] - outputs[1]).max(), 1e-2)
        self.assertGreater(np.abs(outputs[1] - outputs[2]).max(), 1e-2)

        # Another architecture gets its own trace.
        other = _net(4, "wide", width_mult=0.5)
        path = exporter.export(other, os.path.join(root, "wide"))
        self.assertEqual(exporter.traces, 2)
        loaded = tf.saved_model.load(path)
        self.assertAllClose(
            loaded.serve(x), other(x, training=False), atol=1e-4
        )
        # The first architecture is still served from its trace.
        exporter.export(nets[0], os.path.join(root, "again"))
        self.assertEqual(exporter.traces, 2)

    def test_saved_model_contract(self):
        net = _net(5, "net_0")
        path = export_lib.export_saved_model(
            net, os.path.join(self.get_temp_dir(), "export")
        )
        loaded = tf.saved_model.load(path)
        self.assertCountEqual(
            loaded.signatures, ["serve", "serve_uint8", "serving_default"]
        )
        for name, dtype in [
            ("serve", tf.float32),
            ("serve_uint8", tf.uint8),
            ("serving_default", tf.float32),
        ]:
            sig = loaded.signatures[name]
            args, kwargs = sig.structured_input_signature
            self.assertEqual(args, ())
            self.assertEqual(
                kwargs["images"],
                tf.TensorSpec([None, 32, 32, 3], dtype, name="images"),
            )
            self.assertEqual(
                sig.structured_outputs["output_0"],
                tf.TensorSpec([None, 10], tf.float32, name="output_0"),
            )
        self.assertEqual(
            loaded.serve.input_signature,
            (tf.TensorSpec([None, 32, 32, 3], tf.float32),),
        )
        self.assertEqual(
            sorted(v.name for v in loaded.variables),
            sorted(f"{v.path}:0" for v in net.variables),
        )
        self.assertLen(loaded.trainable_variables, len(net.trainable_weights))
        self.assertLen(
            loaded.non_trainable_variables, len(net.non_trainable_weights)
        )
        self.assertTrue(
            os.path.isfile(os.path.join(path, "fingerprint.pb"))
        )

    def test_mixed_precision_net_serves_float32(self):
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            net = _net(6, "net_0")
        finally:
            keras.mixed_precision.set_global_policy("float32")
        path = export_lib.export_saved_model(
            net, os.path.join(self.get_temp_dir(), "mixed")
        )
        loaded = tf.saved_model.load(path)
        self.assertIn("float16", [layer.compute_dtype for layer in net.layers])
        x = _images()
        got = loaded.serve(x)
        self.assertEqual(got.dtype, tf.float32)
        # The same float16 graph as the Keras call.
        want = tf.cast(net(x, training=False), tf.float32)
        self.assertAllClose(got, want, atol=1e-6)

    def test_bad_model_names_it(self):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="mlp")
        with self.assertRaisesRegex(export_lib.ExportError, "mlp has input"):
            export_lib.export_saved_model(
                model, os.path.join(self.get_temp_dir(), "x")
            )


class EvaluateTest(tf.test.TestCase):
    def test_sums_match_per_batch_numpy(self):
        net = _net(7, "net_0")
        rng = np.random.default_rng(8)
        images = _images(9, n=10)
        labels = rng.integers(0, 10, 10).astype("int32")
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        result = evaluation.evaluate(
            lambda x: net(x, training=False), ds
        )
        logits = net(images, training=False).numpy().astype("float64")
        order = np.argsort(-logits, axis=-1)
        top5 = np.mean([labels[i] in order[i, :5] for i in range(10)])
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        loss = -np.mean(log_probs[np.arange(10), labels])
        self.assertEqual(result["count"], 10)
        self.assertAllClose(
            result["top1"], np.mean(order[:, 0] == labels), atol=1e-7
        )
        self.assertAllClose(result["top5"], top5, atol=1e-7)
        self.assertAllClose(result["loss"], loss, rtol=1e-5)


if __name__ == "__main__":
    tf.test.main()
