"""When `import tfgraft` turns oneDNN on, and that it leaves threads alone."""

import json
import os
import subprocess
import sys

import tensorflow as tf

import tfgraft

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512vl"}


class OneDNNDefaultTest(tf.test.TestCase):
    def test_on_only_with_avx512_and_unset(self):
        self.assertEqual(tfgraft._onednn_default({}, _AVX512), "1")
        self.assertIsNone(tfgraft._onednn_default({}, _AVX2))
        self.assertIsNone(tfgraft._onednn_default({}, frozenset()))
        for value in ("0", "1"):
            environ = {"TF_ENABLE_ONEDNN_OPTS": value}
            self.assertIsNone(tfgraft._onednn_default(environ, _AVX512))

    def test_warns_when_forced_on_avx2_only(self):
        forced = {"TF_ENABLE_ONEDNN_OPTS": "1"}
        message = tfgraft._onednn_warning(forced, _AVX2)
        self.assertIn("TF_ENABLE_ONEDNN_OPTS=1", message)
        self.assertIn("bench/onednn_conv_grad_check.py", message)
        self.assertNotIn("\n", message)
        self.assertIsNone(tfgraft._onednn_warning(forced, _AVX512))
        self.assertIsNone(tfgraft._onednn_warning({}, _AVX2))
        off = {"TF_ENABLE_ONEDNN_OPTS": "0"}
        self.assertIsNone(tfgraft._onednn_warning(off, _AVX2))
        # Not an x86 CPU with AVX2 (ARM, or flags unreadable): no warning.
        self.assertIsNone(tfgraft._onednn_warning(forced, frozenset()))

    def test_fresh_import_sets_only_the_onednn_switch(self):
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS")
        }
        env["PYTHONPATH"] = _ROOT
        code = (
            "import json, os, sys, tfgraft; "
            "print(json.dumps([os.environ.get('TF_ENABLE_ONEDNN_OPTS'), "
            "os.environ.get('TF_NUM_INTEROP_THREADS'), "
            "'tensorflow' in sys.modules, sorted(tfgraft.cpu.flags())]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        onednn, interop, tf_loaded, flags = json.loads(out)
        self.assertFalse(tf_loaded)
        # One inter-op thread is no longer imposed (issue #16: the wrong
        # gradient was oneDNN's AVX2 kernel, with one thread as with two).
        self.assertIsNone(interop)
        self.assertEqual(onednn, tfgraft._onednn_default({}, frozenset(flags)))


if __name__ == "__main__":
    tf.test.main()
