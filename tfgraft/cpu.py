"""What the CPU offers, read from /proc/cpuinfo (no TensorFlow import).

`import tfgraft` uses it to decide on oneDNN before TensorFlow loads, the
trainer to warn about emulated bfloat16, and `bench/throughput.py` to
estimate the peak GFLOP/s. Elsewhere than Linux the file is missing and
every answer is empty.
"""

CPUINFO = "/proc/cpuinfo"


def _fields(cpuinfo, key):
    """The values of every `key : value` line of `cpuinfo`."""
    try:
        with open(cpuinfo) as f:
            return [
                line.partition(":")[2].strip()
                for line in f
                if line.partition(":")[0].strip() == key
            ]
    except OSError:
        return []


def flags(cpuinfo=CPUINFO):
    """The feature flags any core reports (`avx2`, `avx512f`, ...)."""
    return frozenset(
        f for line in _fields(cpuinfo, "flags") for f in line.split()
    )


def nominal_mhz(cpuinfo=CPUINFO):
    """The first core's reported clock in MHz, or None."""
    values = _fields(cpuinfo, "cpu MHz")
    return float(values[0]) if values else None
