"""tfgraft's performance report: training img/s side by side in one run.

Every contender runs in its own worker process (so each has its own peak
RSS and thread pools), built and warmed up once; the parent then times
them in rounds, one window each in rotating order, while the others wait
idle. Interleaving spreads machine noise over all contenders; the report
gives medians over rounds and ratios of medians.

Contenders, on the same in-memory batches, batch size and thread count:

* `tfgraft`: the tfgraft `Trainer` (one net), float32 or mixed bfloat16 /
  float16; `tfgraft+xla` with the forward/backward under XLA.
* `keras_fit`: plain `keras.Model.fit` on the same zoo model.
* `torch`: the same CIFAR ResNet (option A shortcuts) written below in
  PyTorch, channels_last, `torch.autocast` for bfloat16; only when `torch`
  is importable (`pip install torch==2.13.0` gives the CPU build).
* `tfgraft_Nnets`: N nets in one tfgraft process (img/s summed over nets),
  against N one-net tfgraft processes training at the same time (img/s
  summed over processes), with the peak RSS of each side.
* `pipeline`: the tfgraft input pipeline alone (decode + CIFAR
  augmentation), against the training step.

    python bench/throughput.py --out_dir=bench/results/throughput --plot

The report prints Markdown; `--out_dir` writes `throughput.md`,
`throughput.json` and, with `--plot`, `throughput.png`. It runs unchanged
on CPU-only machines; on a GPU pass e.g. `--dtypes=float32,float16
--batch_sizes=128,512`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Before TensorFlow loads: tfgraft's oneDNN defaults (tfgraft/__init__.py).
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import tfgraft  # noqa: E402, F401
from tfgraft import cpu  # noqa: E402
from tfgraft import io as io_lib  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["resnet20", "resnet56"], "Zoo models.")
_DTYPES = flags.DEFINE_list(
    "dtypes", ["float32", "bfloat16"], "float32, bfloat16 or float16."
)
_BATCHES = flags.DEFINE_list("batch_sizes", ["128"], "Batch sizes.")
_NETS = flags.DEFINE_list(
    "nets", ["1", "2", "4"], "Net counts for the N-nets rows."
)
_NETS_MODEL = flags.DEFINE_string(
    "nets_model", "resnet20", "Model of the N-nets and pipeline rows."
)
_XLA = flags.DEFINE_bool("xla", True, "Add tfgraft+xla rows (float32).")
_FIT = flags.DEFINE_bool("fit", True, "Add keras.Model.fit rows.")
_TORCH = flags.DEFINE_bool("torch", True, "Add PyTorch rows if importable.")
_DATASET = flags.DEFINE_string(
    "dataset", "synthetic", "--dataset spec of the pipeline row."
)
_STEPS = flags.DEFINE_integer("steps", 4, "Training steps per timed window.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed windows per contender.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Warm-up steps.")
_OUT = flags.DEFINE_string("out_dir", None, "Write md/json/png here.")
_PLOT = flags.DEFINE_bool("plot", False, "Also write throughput.png.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one contender.")
_PEAK = flags.DEFINE_float(
    "peak_gflops",
    None,
    "The CPU's float32 peak in GFLOP/s; default: estimated from /proc/cpuinfo "
    "(cores x nominal clock x FLOPs per cycle of two FMA pipes of the widest "
    "vector unit).",
)

_REPLY = "@@ "


# === Workers: each builds one contender and answers "run N" / "rss". ===


def _tf_setup(spec):
    import keras

    if spec["dtype"] != "float32":
        keras.mixed_precision.set_global_policy(f"mixed_{spec['dtype']}")


def _tf_batches(batch):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, batch).astype("int32")
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _tfgraft_worker(spec):
    import keras
    import tensorflow as tf

    from tfgraft import models
    from tfgraft.training import optimizers
    from tfgraft.training import trainer as trainer_lib

    _tf_setup(spec)
    strategy = tf.distribute.get_strategy()
    nets, opts = [], []
    for i in range(spec["nets"]):
        keras.utils.set_random_seed(spec.get("seed", 0) + i)
        nets.append(models.build_model(spec["model"]))
        opts.append(optimizers.TorchSGD(0.01, momentum=0.9, weight_decay=5e-4))
    trainer = trainer_lib.Trainer(
        nets,
        opts,
        strategy,
        global_batch_size=spec["batch"],
        jit=spec["xla"],
    )
    iterators = [iter(_tf_batches(spec["batch"])) for _ in nets]

    def run(n):
        trainer.train_loop(iterators, n)  # returns host-side stats

    return run


def _fit_worker(spec):
    import keras

    from tfgraft import models
    from tfgraft.training import optimizers

    _tf_setup(spec)
    keras.utils.set_random_seed(0)
    net = models.build_model(spec["model"])
    net.compile(
        optimizer=optimizers.TorchSGD(0.01, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    ds = _tf_batches(spec["batch"])

    def run(n):
        net.fit(ds, steps_per_epoch=n, epochs=1, verbose=0)

    return run


def _torch_resnet(depth):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride = stride
            self.pad = cout - cin

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            short = x
            if self.stride != 1 or self.pad:
                # Option A: subsample and zero-pad the channels.
                short = x[:, :, :: self.stride, :: self.stride]
                half = self.pad // 2
                short = F.pad(short, (0, 0, 0, 0, half, self.pad - half))
            return F.relu(out + short)

    class ResNet(nn.Module):
        def __init__(self, blocks):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            layers, cin = [], 16
            for stage, width in enumerate((16, 32, 64)):
                for b in range(blocks):
                    stride = 2 if stage and not b else 1
                    layers.append(Block(cin, width, stride))
                    cin = width
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.layers(F.relu(self.bn(self.conv(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return ResNet((depth - 2) // 6)


def _torch_worker(spec):
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    depth = int(spec["model"].removeprefix("resnet"))
    net = _torch_resnet(depth).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
    )
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(spec["batch"], 3, 32, 32, generator=gen) * 255).to(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 10, (spec["batch"],), generator=gen)
    mean = torch.tensor([125.3, 123.0, 113.9]).view(1, 3, 1, 1)
    std = torch.tensor([63.0, 62.1, 66.7]).view(1, 3, 1, 1)
    use_bf16 = spec["dtype"] == "bfloat16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = F.cross_entropy(net((x - mean) / std), y)
        loss.backward()
        opt.step()
        return loss

    def run(n):
        for _ in range(n):
            loss = step()
        loss.item()

    return run


def _pipeline_worker(spec):
    from tfgraft.config import DataConfig
    from tfgraft.data import load_source
    from tfgraft.data import train_dataset

    source = load_source(spec["dataset"])
    it = iter(
        train_dataset(
            source, batch_size=spec["batch"], seed=0, augment=DataConfig()
        )
    )

    def run(n):
        # A pipeline "step" is one batch; 8 per training step's window
        # keeps the window long enough to time.
        for _ in range(n * 8):
            images, _ = next(it)
        images.numpy()

    return run


_WORKERS = {
    "tfgraft": _tfgraft_worker,
    "keras_fit": _fit_worker,
    "torch": _torch_worker,
    "pipeline": _pipeline_worker,
}


def _serve(spec):
    run = _WORKERS[spec["kind"]](spec)
    run(spec["warmup"])
    print(_REPLY + "ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "run":
            start = time.perf_counter()
            run(int(args[0]))
            print(_REPLY + str(time.perf_counter() - start), flush=True)
        elif cmd == "rss":
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(_REPLY + str(kib / 1024.0), flush=True)
        else:
            return


# === Parent: start workers, time them in rounds, report. ===


class _Contender:
    def __init__(self, spec):
        self.spec = spec
        self.seconds = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)]
            + ["--worker=" + json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._ask(None)  # "ready"

    def _ask(self, cmd):
        if cmd:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                return line[len(_REPLY) :].strip()
        raise RuntimeError(
            f"contender {self.spec['name']} exited with status "
            f"{self.proc.wait()} (see its stderr above)"
        )

    def window(self, steps):
        self.seconds.append(float(self._ask(f"run {steps}")))

    def start(self, steps):
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()

    def finish(self):
        return float(self._ask(None))

    def close(self):
        rss = float(self._ask("rss"))
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()
        return rss


def _threads():
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    return intra or len(os.sched_getaffinity(0))


def _device():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name", "GPU"), True
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores", False


def _cpu_peak():
    """Estimated float32 peak GFLOP/s of this CPU and how it was estimated.

    cores x nominal clock x FLOPs/cycle, where a core has two FMA pipes of
    the widest vector unit it reports (AVX-512: 16 lanes, AVX2: 8), each
    FMA counting 2 FLOPs. Boost clocks are unknown (in a VM, too), and
    some CPUs run 512-bit FMAs at half rate (AMD Zen 4), so achieved
    fractions are indicative.
    """
    if _PEAK.value:
        return _PEAK.value, "--peak_gflops"
    flags_, mhz = cpu.flags(), cpu.nominal_mhz()
    if not mhz or "fma" not in flags_:
        return None, "unknown"
    lanes = 16 if "avx512f" in flags_ else 8
    cores = len(os.sched_getaffinity(0))
    peak = cores * mhz / 1e3 * 2 * lanes * 2
    how = (
        f"{cores} cores x {mhz / 1e3:.2f} GHz x 2 FMA pipes x {lanes} "
        "float32 lanes x 2 FLOPs"
    )
    return peak, how


def _train_gflop_per_image(model):
    """Training FLOPs per image / 1e9: 3 x the forward pass (2 per MAC)."""
    from tfgraft import complexity
    from tfgraft import models

    macs = complexity.count(models.build_model(model), "macs").flops
    return 3 * 2 * macs / 1e9


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _plan(threads, on_gpu):
    """Sections of contenders; each section's workers live at the same time.

    One section per (batch, model) compares the frameworks; one per batch
    holds the N-nets rows and the pipeline. Sections run one after the
    other, which bounds the number of live worker processes (memory).
    """
    sections = []
    specs = []

    def add(name, kind, model, dtype, batch, **extra):
        spec = dict(
            name=name,
            kind=kind,
            model=model,
            dtype=dtype,
            batch=batch,
            nets=1,
            xla=False,
            threads=threads,
            warmup=_WARMUP.value,
            dataset=_DATASET.value,
        )
        spec.update(extra)
        specs.append(spec)

    # The PyTorch build installed here is CPU-only: compare only on CPU.
    torch_ok = _TORCH.value and _torch_available() and not on_gpu
    for batch in map(int, _BATCHES.value):
        for model in _MODELS.value:
            for dtype in _DTYPES.value:
                key = f"{model}/{dtype}/b{batch}"
                add(f"tfgraft {key}", "tfgraft", model, dtype, batch)
                if _XLA.value and (dtype == "float32" or on_gpu):
                    add(
                        f"tfgraft+xla {key}",
                        "tfgraft",
                        model,
                        dtype,
                        batch,
                        xla=True,
                    )
                if _FIT.value:
                    add(f"keras_fit {key}", "keras_fit", model, dtype, batch)
                if torch_ok and dtype in ("float32", "bfloat16"):
                    add(f"torch {key}", "torch", model, dtype, batch)
            sections.append(specs)
            specs = []
        key = f"{_NETS_MODEL.value}/float32/b{batch}"
        for n in sorted(set(map(int, _NETS.value)) | {1}):
            add(
                _nets_name(n, key),
                "tfgraft",
                _NETS_MODEL.value,
                "float32",
                batch,
                nets=n,
            )
        # Partners of the one-net contender for "N separate processes".
        for k in range(1, max(map(int, _NETS.value))):
            add(
                f"solo{k} {key}",
                "tfgraft",
                _NETS_MODEL.value,
                "float32",
                batch,
                seed=k,
                solo=True,
            )
        add(f"pipeline b{batch}", "pipeline", "-", "float32", batch)
        sections.append(specs)
        specs = []
    return sections


def _nets_name(n, key):
    return f"tfgraft_{n}net{'s' if n > 1 else ''} {key}"


def _rate(c):
    spec = c.spec
    images = spec["batch"] * spec["nets"] * _STEPS.value
    if spec["kind"] == "pipeline":
        images *= 8
    return [images / s for s in c.seconds]


def _report(results, separate, solo_rss, meta):
    by_name = {r["name"]: r for r in results}

    def med(name):
        r = by_name.get(name)
        return r["img_per_sec"] if r else None

    lines = [
        f"Device: {meta['device']}; {meta['threads']} threads; "
        f"TF {meta['tf']}, Keras {meta['keras']}"
        + (f", PyTorch {meta['torch']}" if meta.get("torch") else "")
        + f"; oneDNN {meta['onednn']}; {meta['rounds']} rounds x "
        f"{meta['steps']} steps, medians. GFLOP/s: img/s x training FLOPs "
        "per image (3 x forward, 2 per multiply-add); peak "
        + (
            "unknown"
            if meta.get("peak_gflops") is None
            else f"{meta['peak_gflops']:,.0f} GFLOP/s ({meta['peak_how']})"
        )
        + ".",
        "",
        "| model | dtype | batch | tfgraft img/s | +XLA | keras fit | "
        "PyTorch | tfgraft/PyTorch | tfgraft/fit | XLA/no-XLA | "
        "tfgraft GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    peak = meta.get("peak_gflops")
    ratios = {}

    def fmt(v, digits=0):
        return "-" if v is None else f"{v:,.{digits}f}"

    def div(a, b):
        return None if a is None or b is None else a / b

    for batch in map(int, _BATCHES.value):
        for model in _MODELS.value:
            for dtype in _DTYPES.value:
                key = f"{model}/{dtype}/b{batch}"
                t = med(f"tfgraft {key}")
                x = med(f"tfgraft+xla {key}")
                f = med(f"keras_fit {key}")
                p = med(f"torch {key}")
                gflops = None
                if t is not None:
                    gflops = t * meta["train_gflop_per_image"][model]
                share = div(gflops, peak)
                ratios[key] = {
                    "tfgraft_over_torch": div(t, p),
                    "tfgraft_over_fit": div(t, f),
                    "xla_over_no_xla": div(x, t),
                    "tfgraft_gflops": gflops,
                    "tfgraft_of_peak": share,
                }
                lines.append(
                    f"| {model} | {dtype} | {batch} | {fmt(t)} | {fmt(x)} | "
                    f"{fmt(f)} | {fmt(p)} | {fmt(div(t, p), 2)} | "
                    f"{fmt(div(t, f), 2)} | {fmt(div(x, t), 2)} | "
                    f"{fmt(gflops, 1)} | "
                    f"{'-' if share is None else f'{share:.0%}'} |"
                )
    lines += [
        "",
        f"{_NETS_MODEL.value}, float32: N nets in one tfgraft process vs N "
        "one-net processes training at the same time (img/s summed over "
        "nets; RSS: peak of the process, summed over the N processes).",
        "",
        "| N | batch | one process img/s | N processes img/s | ratio | "
        "one-process RSS MiB | N-processes RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch in map(int, _BATCHES.value):
        key = f"{_NETS_MODEL.value}/float32/b{batch}"
        one = by_name.get(_nets_name(1, key))
        for n in sorted(set(map(int, _NETS.value)) | {1}):
            r = by_name.get(_nets_name(n, key))
            if not r or not one:
                continue
            if n == 1:
                sep, rss = r["img_per_sec"], r["peak_rss_mib"]
            else:
                sep = separate[f"{n}x1 b{batch}"]["img_per_sec"]
                rss = one["peak_rss_mib"] + sum(solo_rss[batch][: n - 1])
            eff = div(r["img_per_sec"], sep)
            ratios[f"{key}/{n}nets"] = {"one_process_over_n_processes": eff}
            lines.append(
                f"| {n} | {batch} | {fmt(r['img_per_sec'])} | {fmt(sep)} | "
                f"{fmt(eff, 2)} | {fmt(r['peak_rss_mib'])} | {fmt(rss)} |"
            )
        one = None if one is None else one["img_per_sec"]
        pipe = med(f"pipeline b{batch}")
        ratio = div(pipe, one)
        ratios[f"pipeline/b{batch}"] = {"pipeline_over_step": ratio}
        lines += [
            "",
            f"Input pipeline alone ({_DATASET.value}, CIFAR augmentation, "
            f"batch {batch}): {fmt(pipe)} img/s = {fmt(ratio, 1)} x the "
            f"{_NETS_MODEL.value} training step.",
        ]
    return "\n".join(lines), ratios


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = [r["name"] for r in results if r["kind"] != "pipeline"]
    rates = [r["img_per_sec"] for r in results if r["kind"] != "pipeline"]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1))
    ax.barh(range(len(names)), rates, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training img/s (median)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    io_lib.atomic_write_bytes(path, png.getvalue())


def _run_section(specs, results, groups, solo_rss):
    contenders, solos = [], {}
    for spec in specs:
        print(f"starting {spec['name']} ...", file=sys.stderr, flush=True)
        c = _Contender(spec)
        if spec.get("solo"):
            solos.setdefault(spec["batch"], []).append(c)
        else:
            contenders.append(c)
    by_name = {c.spec["name"]: c for c in contenders}
    for r in range(_ROUNDS.value):
        # Rotate the order so no contender always follows the same one.
        for c in contenders[r:] + contenders[:r]:
            c.window(_STEPS.value)
        for batch, partners in solos.items():
            one = by_name[
                _nets_name(1, f"{_NETS_MODEL.value}/float32/b{batch}")
            ]
            for n in map(int, _NETS.value):
                if n == 1:
                    continue
                group = [one] + partners[: n - 1]
                start = time.perf_counter()
                for c in group:
                    c.start(_STEPS.value)
                for c in group:
                    c.finish()
                seconds = time.perf_counter() - start
                groups.setdefault(f"{n}x1 b{batch}", []).append(
                    n * batch * _STEPS.value / seconds
                )
        print(f"round {r + 1}/{_ROUNDS.value}", file=sys.stderr, flush=True)
    for batch, partners in solos.items():
        solo_rss[batch] = [c.close() for c in partners]
    for c in contenders:
        rates = _rate(c)
        results.append(
            dict(
                name=c.spec["name"],
                kind=c.spec["kind"],
                spec=c.spec,
                img_per_sec=statistics.median(rates),
                img_per_sec_windows=rates,
                peak_rss_mib=c.close(),
            )
        )


def main(argv):
    del argv
    if _WORKER.value:
        _serve(json.loads(_WORKER.value))
        return
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    threads = _threads()
    device, on_gpu = _device()
    results, groups, solo_rss = [], {}, {}
    for specs in _plan(threads, on_gpu):
        _run_section(specs, results, groups, solo_rss)
    meta = dict(
        device=device,
        threads=threads,
        tf=tf.__version__,
        keras=keras.__version__,
        onednn="on" if _pywrap_util_port.IsMklEnabled() else "off",
        inter_op_threads=os.environ.get("TF_NUM_INTEROP_THREADS", "auto"),
        rounds=_ROUNDS.value,
        steps=_STEPS.value,
        train_gflop_per_image={
            m: _train_gflop_per_image(m) for m in _MODELS.value
        },
    )
    meta["peak_gflops"], meta["peak_how"] = _cpu_peak()
    if _torch_available():
        import torch

        meta["torch"] = torch.__version__
    separate = {
        name: dict(
            img_per_sec=statistics.median(rates), img_per_sec_windows=rates
        )
        for name, rates in groups.items()
    }
    table, ratios = _report(results, separate, solo_rss, meta)
    print(table)
    if _OUT.value:
        io_lib.atomic_write_text(
            os.path.join(_OUT.value, "throughput.md"), table + "\n"
        )
        io_lib.atomic_write_json(
            os.path.join(_OUT.value, "throughput.json"),
            dict(
                meta=meta,
                ratios=ratios,
                results=results,
                separate_processes=separate,
            ),
        )
        if _PLOT.value:
            _plot(results, os.path.join(_OUT.value, "throughput.png"))


if __name__ == "__main__":
    app.run(main)
