"""Tests for tfgraft.cpu, the /proc/cpuinfo reader."""

import tensorflow as tf

from tfgraft import cpu

_CPUINFO = """processor\t: 0
cpu MHz\t\t: 2596.124
flags\t\t: fpu sse avx2 fma avx512f

processor\t: 1
cpu MHz\t\t: 3100.000
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16
"""


class CpuTest(tf.test.TestCase):
    def test_flags_of_every_core(self):
        path = self.create_tempfile(content=_CPUINFO).full_path
        self.assertEqual(
            cpu.flags(path),
            {"fpu", "sse", "avx2", "fma", "avx512f", "avx512_bf16"},
        )

    def test_nominal_mhz_of_the_first_core(self):
        path = self.create_tempfile(content=_CPUINFO).full_path
        self.assertEqual(cpu.nominal_mhz(path), 2596.124)

    def test_missing_file_is_empty(self):
        self.assertEqual(cpu.flags("/nonexistent/cpuinfo"), frozenset())
        self.assertIsNone(cpu.nominal_mhz("/nonexistent/cpuinfo"))


if __name__ == "__main__":
    tf.test.main()
