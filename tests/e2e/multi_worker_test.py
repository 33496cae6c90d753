"""`--strategy=multi_worker` with two real worker processes, and roles.

The end-to-end test starts two `python -m train.grafting` workers on
127.0.0.1 (one CPU each, `TF_CONFIG` differing by task index), then checks
that both end with the same weights, equal to one process training the
same global batch on two replicas, and that only the chief wrote a
workdir. It is marked large (two TensorFlow processes, about a minute of
CPU each).
"""

import json
import os
import socket
import subprocess
import sys
import types
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tfgraft import config as cfg
from tfgraft.grafting import job as graft_job
from tfgraft.testing import devices
from tfgraft.training import distribute

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# 64 images / batch 16: one epoch of 4 steps, grafting every 2 steps.
_FLAGS = [
    "--strategy=multi_worker",
    "--dataset=synthetic",
    "--synthetic_train_size=64",
    "--synthetic_test_size=32",
    "--batch_size=16",
    "--eval_batch_size=32",
    "--epochs=1",
    "--graft_every=2",
    "--num_nets=2",
    "--difflr",
    "--model=resnet20",
    "--width_mult=0.25",
    "--learning_rate=0.05",
    "--progress=false",
]
_TIMEOUT_S = 400


def _free_ports(count):
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tail(path, lines=15):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _checkpoint_values(directory):
    """Numeric values of the newest checkpoint in `directory`, by key."""
    path = tf.train.latest_checkpoint(directory)
    assert path, f"no checkpoint in {directory}"
    reader = tf.train.load_checkpoint(path)
    values = {}
    for key in reader.get_variable_to_shape_map():
        # The history string holds wall times; save_counter counts calls.
        if key.startswith(("history", "save_counter", "_CHECKPOINTABLE")):
            continue
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and value.dtype == object:
            continue
        values[key] = value
    return values


class _NoExport(graft_job.Grafting):
    # The reference only needs its checkpoint; exports take most of a run.
    def export(self, ex, trainer):
        del ex, trainer


class MultiWorkerTest(tf.test.TestCase):
    @pytest.mark.large
    def test_two_workers_match_one_process_with_the_same_global_batch(self):
        root = self.create_tempdir().full_path
        scratch = os.path.join(root, "scratch")
        workdirs = [os.path.join(root, f"worker_{i}") for i in range(2)]
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
        procs, logs = [], []
        for i in range(2):
            tf_config = {
                "cluster": cluster,
                "task": {"type": "worker", "index": i},
            }
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(tf_config),
                CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL="2",
                TFGRAFT_WORKER_SCRATCH=scratch,
            )
            logs.append(os.path.join(root, f"worker_{i}.log"))
            with open(logs[-1], "w") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "train.grafting",
                            f"--workdir={workdirs[i]}",
                            *_FLAGS,
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            for p in procs:
                p.wait(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
                p.wait()
            self.fail("workers timed out:\n" + _tail(logs[0]) + _tail(logs[1]))
        for i, p in enumerate(procs):
            self.assertEqual(p.returncode, 0, f"worker {i}:\n{_tail(logs[i])}")

        # Only the chief (worker 0) wrote a workdir; worker 1 saved its
        # checkpoints into the kept scratch folder.
        chief = workdirs[0]
        self.assertFalse(os.path.exists(workdirs[1]))
        for name in (
            "config.json",
            "history.json",
            "report.json",
            "summaries",
            "export/net_0/saved_model.pb",
            "export/net_1/saved_model.pb",
        ):
            self.assertTrue(os.path.exists(os.path.join(chief, name)), name)
        with open(os.path.join(chief, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["steps"], 4)
        self.assertEqual(report["grafting"]["grafts_this_session"], 2)

        ours = _checkpoint_values(os.path.join(chief, "checkpoints"))
        theirs = _checkpoint_values(os.path.join(scratch, "worker_1"))
        self.assertEqual(sorted(ours), sorted(theirs))
        self.assertEqual(int(ours["global_step/.ATTRIBUTES/VARIABLE_VALUE"]), 4)
        for key, value in ours.items():
            # All-reduced updates: bit-identical on both workers.
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)

        # One process with two replicas (per-replica BN statistics, as on
        # two one-device workers) and the same global batch of 16.
        with open(os.path.join(chief, "config.json")) as f:
            config = cfg.JobConfig.from_dict(json.load(f))
        ref_dir = os.path.join(root, "reference")
        _NoExport(config).run(ref_dir, strategy=devices.mirrored_strategy())
        ref = _checkpoint_values(os.path.join(ref_dir, "checkpoints"))
        self.assertEqual(sorted(ours), sorted(ref))
        for key, value in ours.items():
            self.assertAllClose(value, ref[key], atol=1e-5, msg=key)
        # It trained: the momentum buffers hold gradients.
        momentum = [v for k, v in ours.items() if k.startswith("optimizer_")]
        self.assertGreater(max(float(np.abs(v).max()) for v in momentum), 0)


class RolesTest(tf.test.TestCase):
    def _fake(self, cluster, task_type, task_id):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster),
            task_type=task_type,
            task_id=task_id,
        )
        return types.SimpleNamespace(cluster_resolver=resolver)

    def test_chief_is_the_chief_task_or_worker_zero(self):
        workers = {"worker": ["a:1", "b:1"]}
        with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
        self.assertTrue(distribute.is_chief(self._fake(workers, "worker", 0)))
        self.assertFalse(distribute.is_chief(self._fake(workers, "worker", 1)))
        self.assertTrue(distribute.is_chief(self._fake(with_chief, "chief", 0)))
        self.assertFalse(
            distribute.is_chief(self._fake(with_chief, "worker", 0))
        )
        self.assertEqual(
            distribute.num_workers(self._fake(with_chief, "worker", 1)), 3
        )
        self.assertTrue(distribute.is_chief(tf.distribute.get_strategy()))
        self.assertEqual(
            distribute.num_workers(tf.distribute.get_strategy()), 1
        )

    def test_scratch_is_kept_only_when_asked(self):
        fake = self._fake({"worker": ["a:1", "b:1"]}, "worker", 1)
        with mock.patch.dict(os.environ):
            os.environ.pop(distribute.SCRATCH_ENV, None)
            path = distribute.worker_scratch_dir(fake)
            self.assertTrue(os.path.isdir(path))
            distribute.remove_worker_scratch(path)
            self.assertFalse(os.path.exists(path))
            root = self.create_tempdir().full_path
            os.environ[distribute.SCRATCH_ENV] = root
            path = distribute.worker_scratch_dir(fake)
            self.assertEqual(path, os.path.join(root, "worker_1"))
            distribute.remove_worker_scratch(path)
            self.assertTrue(os.path.isdir(path))

    def test_data_sharding_policy(self):
        ds = distribute.shard_by_data(tf.data.Dataset.range(4))
        self.assertEqual(
            ds.options().experimental_distribute.auto_shard_policy,
            tf.data.experimental.AutoShardPolicy.DATA,
        )
        self.assertEqual(list(ds.as_numpy_iterator()), [0, 1, 2, 3])

    def test_workers_at_different_steps_fail_in_one_line(self):
        fake = self._fake({"worker": ["a:1", "b:1"]}, "worker", 1)
        fake.run = lambda fn: fn()
        # What the all-gather returns when the chief resumed at step 4.
        fake.gather = lambda value, axis: tf.concat([[4], value], axis)
        distribute.check_same_step(fake, 4, "/run/checkpoints")
        with self.assertRaisesRegex(
            cfg.ConfigError,
            r"workers restored different steps \[0, 4\] from "
            r"/run/checkpoints: .* shared filesystem",
        ):
            distribute.check_same_step(fake, 0, "/run/checkpoints")

    def test_single_host_checks_are_no_ops(self):
        strategy = tf.distribute.get_strategy()
        distribute.check_same_step(strategy, 3, "/nowhere")
        distribute.sync_workers(strategy)


class StrategyErrorsTest(tf.test.TestCase):
    def _make(self, tf_config):
        env = {} if tf_config is None else {"TF_CONFIG": tf_config}
        with mock.patch.dict(os.environ, env):
            if tf_config is None:
                os.environ.pop("TF_CONFIG", None)
            return distribute.make_strategy("multi_worker")

    def test_bad_tf_config_is_one_line(self):
        good_cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
        cases = [
            (None, "needs the TF_CONFIG environment variable"),
            ("{cluster", "TF_CONFIG is not valid JSON"),
            ('{"cluster": {}}', "needs 'cluster'"),
            (
                json.dumps(
                    {
                        "cluster": good_cluster,
                        "task": {"type": "ps", "index": 0},
                    }
                ),
                "is not in its cluster",
            ),
            (
                json.dumps(
                    {
                        "cluster": good_cluster,
                        "task": {"type": "worker", "index": 2},
                    }
                ),
                "index 2 is out of range",
            ),
        ]
        for tf_config, message in cases:
            with self.assertRaisesRegex(cfg.ConfigError, message):
                self._make(tf_config)

    def test_tpu_without_tpu_is_one_line(self):
        with mock.patch.dict(os.environ):
            os.environ.pop("TPU_NAME", None)
            with self.assertRaisesRegex(
                cfg.ConfigError, r"^--strategy=tpu: no TPU reachable"
            ) as ctx:
                distribute.make_strategy("tpu")
        self.assertNotIn("\n", str(ctx.exception))

    def test_unknown_strategy(self):
        with self.assertRaisesRegex(cfg.ConfigError, "--strategy=gpus"):
            distribute.make_strategy("gpus")


if __name__ == "__main__":
    tf.test.main()
