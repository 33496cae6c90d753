"""Tests for tfgraft.lwdna (METHODS.md §4.6 checks 3-6, derive, the job)."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import config as cfg
from tfgraft import data as data_lib
from tfgraft import experiment as base_job
from tfgraft import lwdna
from tfgraft import models
from tfgraft.layers.hyper_conv import HyperConv2D
from tfgraft.lwdna import job as job_lib
from tfgraft.testing import test_case
from train import flags as flags_lib

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _hypernet(name="resnet20", width_mult=0.5, input_shape=(32, 32, 3)):
    # The plan is cached per process and building it draws random numbers:
    # build it before seeding, so the net is the same whatever ran before.
    lwdna.latent_plan(name, preset="dhp", input_shape=input_shape)
    keras.utils.set_random_seed(0)
    config = models.default_channel_config(name).scaled(width_mult)
    return lwdna.build_hypernet(
        name,
        channel_config=config,
        embedding_dim=2,
        input_shape=input_shape,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


def _random_scores(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.random(n) for k, n in sizes.items()}



class LatentPlanTest(tf.test.TestCase, parameterized.TestCase):
    def test_resnet20_shares_streams(self):
        plan = lwdna.latent_plan("resnet20", preset="dhp")
        convs = plan.conv_latents
        self.assertEqual(convs["stem_conv"], (lwdna.RGB, "stage1"))
        self.assertEqual(
            convs["stage2_block0_conv1"], ("stage1", "stage2/block0/conv1")
        )
        self.assertEqual(
            convs["stage2_block0_conv2"], ("stage2/block0/conv1", "stage2")
        )
        self.assertEqual(
            convs["stage2_block0_shortcut_conv"], ("stage1", "stage2")
        )
        self.assertEqual(convs["stage3_block2_conv2"][1], "stage3")
        self.assertEqual(plan.classifier, "fc")
        self.assertEqual(plan.classifier_latent, "stage3")
        self.assertEqual(plan.bn_latents["stage2_block0_shortcut_bn"], "stage2")
        self.assertEqual(
            plan.bn_latents["stage1_block1_bn1"], "stage1/block1/conv1"
        )
        # RGB + 3 streams + 9 block-internal latents.
        self.assertLen(plan.keys(), 13)

    @parameterized.named_parameters(
        ("resnet18", "resnet18", "stage1"), ("resnet50", "resnet50", "stem")
    )
    def test_imagenet_stem(self, name, stem_latent):
        plan = lwdna.latent_plan(name, preset="dhp")
        self.assertEqual(
            plan.conv_latents["stem_conv"], (lwdna.RGB, stem_latent)
        )
        self.assertEqual(plan.classifier_latent, "stage4")
        if name == "resnet50":
            self.assertEqual(
                plan.conv_latents["stage1_block0_shortcut_conv"],
                ("stem", "stage1"),
            )

    def test_hypernet_shares_variables(self):
        net = _hypernet()
        a = net.model.get_layer("stage1_block0_conv2")
        b = net.model.get_layer("stage1_block1_conv1")
        self.assertIsInstance(a, HyperConv2D)
        self.assertIs(a.latent_out, b.latent_in)
        self.assertIs(a.latent_out, net.latents["stage1"])
        self.assertIs(
            net.model.get_layer("stem_conv").latent_in, net.latents["rgb"]
        )
        ids = [id(v) for v in net.model.trainable_variables]
        self.assertLen(set(ids), len(ids))
        self.assertEqual(net.latent_sizes()["stage3"], 32)

    @parameterized.named_parameters(
        (
            "option_a",
            "resnet20",
            dict(preset="grafting"),
            r"^LW-DNA needs projection shortcuts: name='resnet20' with "
            r"option-A shortcuts cannot prune its streams \(pass "
            r"shortcut='projection' or preset='dhp'\)\.$",
        ),
        (
            "depthwise",
            "mobilenetv2",
            {},
            r"^LW-DNA supports regular convs only; name='mobilenetv2' has "
            r"the depthwise conv '",
        ),
    )
    def test_unsupported_models(self, name, kwargs, message):
        with self.assertRaisesRegex(lwdna.LWDNAError, message) as ctx:
            lwdna.latent_plan(name, **kwargs)
        self.assertNotIn("--", str(ctx.exception))

    def test_unsupported_model_in_flag_words(self):
        with self.assertRaises(lwdna.LWDNAError) as ctx:
            lwdna.latent_plan("resnet20", preset="grafting")
        self.assertIn(
            "--model=resnet20 with option-A shortcuts cannot prune its "
            "streams (pass --shortcut=projection or --preset=dhp).",
            flags_lib.flag_message(ctx.exception),
        )


class MaskTest(tf.test.TestCase, parameterized.TestCase):
    def test_importance(self):
        v = np.array([-2.0, 0.5, 1.0])
        g = np.array([0.1, -0.4, 0.2])
        self.assertAllClose(lwdna.importance(v, g, "value"), [2.0, 0.5, 1.0])
        self.assertAllClose(lwdna.importance(v, g, "grad"), [0.1, 0.4, 0.2])
        # The reference divides by the signed max (0.2), not the abs-max.
        self.assertAllClose(
            lwdna.importance(v, g, "grad", grad_normalize=True),
            [0.5, 2.0, 1.0],
        )
        with self.assertRaisesRegex(
            ValueError, "^importance kind='norm': must be one of value, grad$"
        ):
            lwdna.importance(v, g, "norm")

    def test_keep_floor(self):
        self.assertEqual(lwdna.keep_floor(64, 0.4), 25)
        self.assertEqual(lwdna.keep_floor(2, 0.4), 1)
        self.assertEqual(lwdna.keep_floor(64, -1), 4)
        self.assertEqual(lwdna.keep_floor(3, -1, min_channels=4), 3)

    @parameterized.named_parameters(
        ("imagenet", "resnet18", None, True),
        ("cifar_default", "resnet20", None, True),
        ("cifar_keep", "resnet20", "keep", False),
    )
    def test_floors_and_monotone(self, name, classifier_input, prunes_fc):
        # §4.6 check 3; by default every model prunes its classifier input
        # down to linear_percentage at most.
        plan = lwdna.latent_plan(name, preset="dhp")
        config = models.default_channel_config(name).scaled(0.25)
        sizes = dict(config.widths, rgb=3)
        scores = _random_scores(sizes, seed=1)
        kwargs = {}
        if classifier_input is not None:
            kwargs["classifier_input"] = classifier_input
        floors = lwdna.mask_floors(
            plan,
            sizes,
            remain_percentage=0.4,
            linear_percentage=0.45,
            **kwargs,
        )
        previous = None
        for pt in [0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0, 2.0]:
            masks = lwdna.compute_masks(scores, floors, pt)
            self.assertTrue(masks["rgb"].all())
            for key, mask in masks.items():
                size = sizes[key]
                if key == plan.classifier_latent:
                    if prunes_fc:
                        self.assertGreaterEqual(mask.sum(), int(size * 0.45))
                    else:
                        self.assertTrue(mask.all())
                elif key != "rgb":
                    self.assertGreaterEqual(mask.sum(), int(size * 0.4))
                if previous is not None:
                    # Non-increasing in pt: kept sets are nested.
                    self.assertFalse(np.any(mask & ~previous[key]))
            previous = masks
        # Above every score only the floors remain.
        for key, mask in previous.items():
            if floors[key] is not None:
                self.assertEqual(mask.sum(), floors[key])

    def test_channel_mask_rule(self):
        scores = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
        # k = 2 -> s_(2) = 0.7; threshold below it keeps all >= threshold.
        self.assertAllEqual(lwdna.channel_mask(scores, 0.4, 2), [1, 0, 1, 0, 1])
        self.assertAllEqual(lwdna.channel_mask(scores, 0.8, 2), [1, 0, 0, 0, 1])


class ThresholdSearchTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("target_0.3", 0.3), ("target_0.55", 0.55), ("target_0.9", 0.9)
    )
    def test_reaches_target(self, target):
        # §4.6 check 4 on a fine-grained monotone staircase.
        rng = np.random.default_rng(2)
        scores = np.sort(rng.random(5000))

        def ratio_at(pt):
            return float(np.mean(scores >= pt))

        result = lwdna.search_threshold(ratio_at, target)
        self.assertTrue(result.converged)
        self.assertLessEqual(abs(result.ratio - target), 1e-3)
        self.assertLessEqual(result.iterations, 100)
        self.assertEqual(result.trace[0][0], 5e-3)
        self.assertAllClose(ratio_at(result.threshold), result.ratio)

    def test_unreachable_target_stops_after_100(self):
        result = lwdna.search_threshold(lambda pt: 0.5 if pt < 1 else 0.4, 0.1)
        self.assertFalse(result.converged)
        self.assertEqual(result.iterations, 100)
        self.assertLen(result.trace, 100)

    def test_shrink_meets_budget_on_real_table(self):
        net = _hypernet()
        table = lwdna.FlopsTable(net.model, net.plan)
        scores = _random_scores(net.latent_sizes(), seed=3)
        result = lwdna.shrink_masks(
            table,
            net.plan,
            scores,
            ratio=0.4,
            remain_percentage=0.4,
            linear_percentage=0.45,
        )
        search = result.search
        # §4.6 check 4: within 0.001 of the target, or 100 iterations (this
        # narrow net's FLOPs move in coarse steps).
        if search.converged:
            self.assertLessEqual(abs(search.ratio - 0.4), 1e-3)
        else:
            self.assertEqual(search.iterations, 100)
        self.assertEqual(table.ratio(result.masks), search.ratio)
        self.assertLess(abs(search.ratio - 0.4), 0.05)
        with self.assertRaisesRegex(
            ValueError, r"^ratio=1.5: must be in \(0, 1\]$"
        ):
            lwdna.shrink_masks(
                table,
                net.plan,
                scores,
                ratio=1.5,
                remain_percentage=0.4,
                linear_percentage=0.45,
            )


class DeriveTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("resnet20", "resnet20", 0.5, 0.45),
        ("resnet18", "resnet18", 0.125, 0.35),
        ("resnet50", "resnet50", 0.0625, 0.3),
    )
    def test_derived_equals_zeroed_widened(self, name, width_mult, ratio):
        # §4.6 check 5 (inference mode, tol 1e-4), and the derived net's
        # FLOPs counted by tfgraft.complexity equal the table's.
        net = _hypernet(name, width_mult)
        test_case.randomize_bn(net.model, seed=4)
        table = lwdna.FlopsTable(net.model, net.plan)
        scores = _random_scores(net.latent_sizes(), seed=5)
        result = lwdna.shrink_masks(
            table,
            net.plan,
            scores,
            ratio=ratio,
            remain_percentage=0.4,
            linear_percentage=0.45,
        )
        config = lwdna.derived_config(net, result.masks)
        # The config records the topology it fits (resolved defaults).
        self.assertEqual(
            (config.preset, config.shortcut), ("dhp", "projection")
        )
        derived = lwdna.build_derived(net, config)
        self.assertFalse(
            any(isinstance(layer, HyperConv2D) for layer in derived.layers)
        )
        lwdna.assign_weights(derived, lwdna.derive_weights(net, result.masks))
        self.assertEqual(
            complexity.count(derived, "dhp").flops,
            table.flops(config.widths | {"rgb": 3}),
        )
        x = np.random.default_rng(6).uniform(0, 255, (3, 32, 32, 3))
        x = x.astype("float32")
        unpruned = net.model(x, training=False).numpy()
        lwdna.zero_pruned_channels(net, result.masks)
        expected = net.model(x, training=False).numpy()
        got = derived(x, training=False).numpy()
        self.assertAllClose(got, expected, atol=1e-4, rtol=0)
        # Pruning really changed the function (so the check can fail).
        self.assertGreater(np.abs(unpruned - expected).max(), 1e-3)

    def test_classifier_input_width(self):
        # ResNet-20 x2 shrunk to the uniform ResNet-20's FLOPs. By default
        # (the reference's LW-DNA rule) the last-stage stream, which feeds
        # the classifier, is pruned but keeps >= floor(0.45 * 128) = 57
        # channels; "keep" leaves it at the widened 128. The derived
        # classifier reads exactly the kept channels.
        keras.utils.set_random_seed(0)
        original = models.default_channel_config("resnet20")
        net = lwdna.build_hypernet(
            "resnet20", channel_config=original.scaled(2), embedding_dim=2
        )
        table = lwdna.FlopsTable(net.model, net.plan)
        scores = _random_scores(net.latent_sizes(), seed=11)
        uniform = complexity.count(
            models.build_model(
                "resnet20", channel_config=original, preset="dhp"
            ),
            "dhp",
        )
        params = {}
        for policy in (None, "linear", "keep"):
            kwargs = {} if policy is None else {"classifier_input": policy}
            result = lwdna.shrink_masks(
                table,
                net.plan,
                scores,
                ratio=0.2514,
                remain_percentage=0.4,
                linear_percentage=0.45,
                **kwargs,
            )
            config = lwdna.derived_config(net, result.masks)
            derived = lwdna.build_derived(net, config)
            lwdna.assign_weights(
                derived, lwdna.derive_weights(net, result.masks)
            )
            width = config.widths["stage3"]
            self.assertEqual(derived.get_layer("fc").kernel.shape[0], width)
            if policy == "keep":
                self.assertIsNone(result.floors["stage3"])
                self.assertEqual(width, 128)
            else:
                self.assertEqual(result.floors["stage3"], 57)
                self.assertBetween(width, 57, 127)
            cost = complexity.count(derived, "dhp")
            # Every policy meets the uniform net's FLOPs within 1%.
            self.assertLess(abs(cost.flops / uniform.flops - 1), 0.01)
            params[policy] = cost.params
        self.assertEqual(params[None], params["linear"])
        # Keeping the widened classifier input costs parameters: the
        # last stage is the parameter-heaviest.
        self.assertGreater(params["keep"], 1.2 * uniform.params)
        self.assertLess(params["linear"], params["keep"])

    def test_table_matches_counter_with_active_channels(self):
        net = _hypernet()
        table = lwdna.FlopsTable(net.model, net.plan)
        self.assertEqual(table.total, complexity.count(net.model, "dhp").flops)
        masks = lwdna.compute_masks(
            _random_scores(net.latent_sizes(), seed=7),
            lwdna.mask_floors(
                net.plan,
                net.latent_sizes(),
                remain_percentage=0.4,
                linear_percentage=0.45,
            ),
            0.5,
        )
        active = {
            conv: (None, int(masks[out].sum()))
            for conv, (_, out) in net.plan.conv_latents.items()
        }
        counted = complexity.count(
            net.model, "dhp", active_channels=active
        ).flops
        self.assertEqual(table.ratio(masks) * table.total, counted)

    def test_search_steps_and_latent_gradients(self):
        # §4.6 check 6 (step count) and the grad importance is dL/dv of
        # the last batch. One batch repeats and the learning rate is 0, so
        # every step sees the weights the gradient was computed at up front
        # and the only difference is float rounding (eager vs graph kernels).
        # A tiny non-zero rate is not enough: this random hypernet is
        # ill-conditioned (moving the input by 1e-4 of its scale moves some
        # latent gradients by 10-20%, and weight steps of ~1e-8 flip ReLUs,
        # jumping gradients by a few %).
        self.assertEqual(lwdna.search_steps(1, 100), 2)
        self.assertEqual(lwdna.search_steps(3, 10), 22)
        net = _hypernet(width_mult=0.25)
        rng = np.random.default_rng(8)
        images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
        labels = rng.integers(0, 10, 16).astype("int32")
        batch = tf.data.Dataset.from_tensors((images, labels))
        with tf.GradientTape() as tape:
            logits = net.model(images, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            )
        keys = list(net.latents)
        expected = tape.gradient(loss, [net.latents[k] for k in keys])
        state = lwdna.run_search(
            net,
            iter(batch.repeat()),
            strategy=tf.distribute.get_strategy(),
            steps=lwdna.search_steps(2, 2),
            global_batch_size=16,
            learning_rate=0.0,
        )
        self.assertEqual(state.steps, 4)
        self.assertAllClose(state.loss, float(loss), atol=1e-5, rtol=0)
        for key, grad in zip(keys, expected):
            grad = grad.numpy()
            self.assertGreater(np.abs(grad).min(), 0.0, key)
            # Measured: at most 6e-7 apart, entries 1e-4 to 0.3.
            self.assertAllClose(
                state.grads[key], grad, atol=2e-6, rtol=1e-4, msg=key
            )


@pytest.mark.large
class ImageNetCounterTest(tf.test.TestCase, parameterized.TestCase):
    """§4.6 check 6: the DHP GMACs, and a derived ResNet-50 x2 config."""

    @parameterized.named_parameters(
        ("resnet18", "resnet18", 1.0, 1.814),
        ("resnet34", "resnet34", 1.0, 3.664),
        ("resnet50", "resnet50", 1.0, 4.089),
        ("resnet50x2", "resnet50", 2.0, 16.117),
    )
    def test_table_gmacs(self, name, width_mult, gmacs):
        kwargs = dict(preset="dhp", input_shape=(224, 224, 3), num_classes=1000)
        model = models.build_model(name, width_mult=width_mult, **kwargs)
        plan = lwdna.latent_plan(name, preset="dhp", input_shape=(224, 224, 3))
        table = lwdna.FlopsTable(model, plan)
        self.assertEqual(round(table.total / 1e9, 3), gmacs)
        if width_mult == 1.0:
            return
        # The README run: ratio 0.23 of ResNet-50 x2 is about 3.71 GMACs.
        sizes = dict(
            models.default_channel_config(name).scaled(2.0).widths, rgb=3
        )
        result = lwdna.shrink_masks(
            table,
            plan,
            _random_scores(sizes, seed=9),
            ratio=0.23,
            remain_percentage=0.4,
            linear_percentage=0.45,
        )
        widths = {k: int(m.sum()) for k, m in result.masks.items()}
        derived = models.build_model(
            name,
            channel_config=models.ChannelConfig(
                name, {k: v for k, v in widths.items() if k != "rgb"}
            ),
            **kwargs,
        )
        flops = complexity.count(derived, "dhp").flops
        self.assertEqual(flops, table.flops(widths))
        self.assertLessEqual(abs(flops / table.total - 0.23), 1e-3)
        self.assertAllClose(flops / 1e9, 3.71, atol=0.02)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("ratio_zero", dict(ratio=0.0), "--ratio=0.0: must be in (0, 1]"),
        ("ratio_big", dict(ratio=1.5), "--ratio=1.5: must be in (0, 1]"),
        (
            "remain_big",
            dict(remain_percentage=1.2),
            "--remain_percentage=1.2: must be in (0, 1]",
        ),
        (
            "linear_zero",
            dict(linear_percentage=0.0),
            "--linear_percentage=0.0",
        ),
        ("importance", dict(importance="norm"), "--importance=norm"),
        (
            "classifier_auto",
            dict(classifier_input="auto"),
            "--classifier_input=auto: must be one of linear, keep",
        ),
        ("init", dict(init="copy"), "--init=copy"),
    )
    def test_config_errors(self, kwargs, message):
        with self.assertRaises(cfg.ConfigError) as ctx:
            cfg.LWDNAConfig(**kwargs)
        text = str(ctx.exception)
        self.assertStartsWith(text, message)
        self.assertNotIn("\n", text)

    def test_derived_config_refuses_other_preset(self):
        # `train.baseline --channel_config=derived.json` without
        # `--preset=dhp` would build option-A shortcuts: refused, naming
        # the flag, instead of silently training another network.
        net = _hypernet()
        masks = {k: np.ones(n, bool) for k, n in net.latent_sizes().items()}
        path = os.path.join(self.get_temp_dir(), "derived.json")
        lwdna.derived_config(net, masks).save(path)
        info = data_lib.load_source(
            "synthetic", synthetic_train_size=8, synthetic_test_size=8
        ).info

        def build(**model):
            config = cfg.JobConfig(
                model=cfg.ModelConfig(
                    name="resnet20", channel_config=path, **model
                )
            )
            job = base_job.Method(config)
            return base_job.Experiment(job, self.get_temp_dir()).build_net(
                0, info
            )

        with self.assertRaises(models.ChannelConfigError) as ctx:
            build()
        self.assertEqual(
            str(ctx.exception),
            f"channel_config='{path}': built for preset 'dhp', "
            "got preset='grafting'",
        )
        self.assertEqual(
            flags_lib.flag_message(ctx.exception),
            f"--channel_config={path}: built for preset 'dhp', "
            "got --preset=grafting",
        )
        net = build(preset="dhp")
        self.assertEqual(net.get_layer("stage3_block0_conv1").filters, 32)

    def test_job_needs_lwdna_section(self):
        with self.assertRaisesRegex(ValueError, "config.lwdna"):
            job_lib.LWDNA(cfg.JobConfig())

    def test_cli_prints_one_line(self):
        env = dict(
            os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""
        )
        proc = test_case.run_entry_point(
            "train.lwdna",
            f"--workdir={self.get_temp_dir()}/cli",
            "--remain_percentage=1.2",
            cwd=_REPO,
            env=env,
            timeout=120,
        )
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(
            test_case.error_lines(proc.stderr),
            [
                "error: --remain_percentage=1.2: must be in (0, 1] "
                "(or -1 for --min_channels)"
            ],
        )


def _uniform_budget_ratio(name, original, width_mult):
    def flops(config):
        net = models.build_model(name, channel_config=config, preset="dhp")
        return complexity.count(net, "dhp").flops

    return flops(original) / flops(original.scaled(width_mult))


@pytest.mark.large
class LWDNAJobTest(tf.test.TestCase):
    def test_tiny_end_to_end(self):
        workdir = os.path.join(self.get_temp_dir(), "lwdna")
        os.makedirs(workdir)
        base = models.default_channel_config("resnet20").scaled(0.25)
        base_path = os.path.join(workdir, "base.json")
        base.save(base_path)
        ratio = _uniform_budget_ratio("resnet20", base, 2.0)
        config = cfg.JobConfig(
            data=cfg.DataConfig(
                batch_size=32,
                eval_batch_size=64,
                synthetic_train_size=128,
                synthetic_test_size=64,
            ),
            model=cfg.ModelConfig(
                name="resnet20", width_mult=2.0, channel_config=base_path
            ),
            optim=cfg.OptimConfig(schedule="constant"),
            run=cfg.RunConfig(epochs=1, progress=False, strategy="default"),
            lwdna=cfg.LWDNAConfig(
                ratio=ratio,
                embedding_dim=2,
                search_batch_size=32,
                importance="grad",
                grad_normalize=True,
                train_uniform=True,
            ),
        )
        report = job_lib.LWDNA(config).run(workdir)
        with open(os.path.join(workdir, "report.json")) as f:
            self.assertEqual(json.load(f)["job"], "lwdna")
        search = report["search"]
        self.assertEqual(search["steps"], 2)
        self.assertEqual(search["classifier_input"], "linear")
        costs = report["complexity"]
        self.assertAllClose(
            costs["derived"]["ratio_to_widened"], search["ratio"], atol=1e-12
        )
        if search["converged"]:
            self.assertLessEqual(abs(search["ratio"] - ratio), 1e-3)
        self.assertEqual(costs["widened"]["flops"], search["widened_flops"])
        self.assertGreater(
            costs["widened"]["flops"], costs["original"]["flops"]
        )
        derived = models.ChannelConfig.load(
            os.path.join(workdir, "channel_config.json")
        )
        self.assertEqual(
            (derived.model, derived.preset, derived.shortcut),
            ("resnet20", "dhp", "projection"),
        )
        for slot, w in report["widths"].items():
            self.assertEqual(w["derived"], derived.widths[slot])
            self.assertEqual(w["widened"], 2 * w["original"])
            self.assertLessEqual(w["derived"], w["widened"])
        self.assertTrue(os.path.exists(os.path.join(workdir, "widths.png")))
        export = os.path.join(workdir, "derived", "export", "saved_model.pb")
        self.assertTrue(os.path.exists(export))

        # Both arms: accuracies, and costs that are those of the nets each
        # sub-job built and trained.
        info = data_lib.load_source(
            "synthetic", synthetic_train_size=8, synthetic_test_size=8
        ).info
        configs = {}
        for arm, channel_config in (("derived", derived), ("uniform", base)):
            entry = report[arm]
            self.assertTrue(entry["trained"])
            for key in ("final_top1", "best_top1", "final_top5"):
                self.assertBetween(entry[key], 0.0, 1.0)
            self.assertGreaterEqual(entry["best_top1"], entry["final_top1"])
            with open(os.path.join(workdir, arm, "config.json")) as f:
                configs[arm] = cfg.JobConfig.from_dict(json.load(f))
            with open(os.path.join(workdir, arm, "report.json")) as f:
                sub = json.load(f)["nets"][0]
            self.assertEqual(entry["final_top1"], sub["final_top1"])
            self.assertEqual(entry["best_top1"], sub["best_top1"])
            net = base_job.Experiment(
                base_job.Method(configs[arm]), workdir
            ).build_net(0, info)
            slots = models.layer_slots("resnet20", preset="dhp")
            for layer_name, slot in slots.items():
                self.assertEqual(
                    net.get_layer(layer_name).output.shape[-1],
                    channel_config.widths[slot],
                )
            cost = complexity.count(net, "dhp")
            self.assertEqual(entry["flops"], cost.flops)
            self.assertEqual(entry["params"], cost.params)
            self.assertEqual(entry["trainable_params"], sub["params"])
            self.assertEqual(
                entry["trainable_params"], base_job.count_params(net)
            )
            # DHP params leave out BN; the sub-job's MACs equal DHP FLOPs.
            self.assertLess(entry["params"], entry["trainable_params"])
            self.assertEqual(entry["flops"], sub["flops"])
        self.assertEqual(report["uniform"]["flops"], costs["original"]["flops"])
        self.assertEqual(report["derived"]["flops"], costs["derived"]["flops"])
        # The uniform arm is the original widths with the derived arm's
        # recipe: same seed (init and data stream), schedule and preset.
        self.assertEqual(
            configs["uniform"],
            dataclasses.replace(
                configs["derived"],
                model=dataclasses.replace(
                    configs["derived"].model, channel_config=base_path
                ),
            ),
        )
        self.assertEqual(configs["uniform"].model.preset, "dhp")
        self.assertEqual(configs["uniform"].model.width_mult, 1.0)
        equal = report["equal_flops"]
        self.assertEqual(
            equal["flops_ratio"],
            report["derived"]["flops"] / report["uniform"]["flops"],
        )
        self.assertEqual(
            equal["params_ratio"],
            report["derived"]["params"] / report["uniform"]["params"],
        )
        self.assertAllClose(equal["uniform_budget_ratio"], ratio)
        self.assertEqual(
            equal["within_tolerance"],
            abs(equal["flops_ratio"] - 1) <= equal["tolerance"],
        )
        if search["converged"]:
            # Within 0.001 of the widened FLOPs, i.e. 0.4% of the uniform.
            self.assertTrue(equal["within_tolerance"])


if __name__ == "__main__":
    tf.test.main()
