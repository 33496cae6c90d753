"""Tests for tfgraft.training.distribute helpers."""

import types

import tensorflow as tf
from absl.testing import parameterized

from tfgraft.training import distribute


def _strategy_on(*devices):
    # Only `extended.worker_devices` is read: a real strategy over GPUs
    # cannot be built on a CPU-only machine.
    return types.SimpleNamespace(
        extended=types.SimpleNamespace(worker_devices=devices)
    )


class ResolveJitTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("cpu", ("/job:localhost/replica:0/task:0/device:CPU:0",), False),
        ("gpu", ("/job:worker/task:0/device:GPU:0",), True),
        ("tpu", ("/job:worker/task:0/device:TPU:0",), True),
    )
    def test_auto_follows_the_devices(self, devices, expected):
        self.assertEqual(
            distribute.resolve_jit(None, _strategy_on(*devices)), expected
        )

    @parameterized.named_parameters(("on", True), ("off", False))
    def test_explicit_flag_wins(self, jit):
        gpu = _strategy_on("/device:GPU:0")
        cpu = _strategy_on("/device:CPU:0")
        self.assertEqual(distribute.resolve_jit(jit, gpu), jit)
        self.assertEqual(distribute.resolve_jit(jit, cpu), jit)

    def test_real_cpu_strategies_resolve_to_off(self):
        for strategy in (
            tf.distribute.get_strategy(),
            tf.distribute.OneDeviceStrategy("/cpu:0"),
        ):
            self.assertFalse(distribute.resolve_jit(None, strategy))


class CpuBfloat16Test(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("avx2_only", "fpu sse avx2 fma", False),
        ("avx512_bf16", "fpu avx512f avx512_bf16", True),
        ("amx", "fpu amx_bf16 amx_tile", True),
    )
    def test_reads_cpu_flags(self, flags_line, expected):
        path = self.create_tempfile(
            content=f"processor\t: 0\nflags\t\t: {flags_line}\n"
        ).full_path
        self.assertEqual(distribute.cpu_has_bfloat16(path), expected)

    def test_missing_cpuinfo_means_no(self):
        self.assertFalse(distribute.cpu_has_bfloat16("/nonexistent/cpuinfo"))


if __name__ == "__main__":
    tf.test.main()
