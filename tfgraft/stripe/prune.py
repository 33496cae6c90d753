"""Final stripe pruning: hard masks and compaction into a smaller model.

`compact(model, threshold)` is the reference's one-shot pruning after
training (METHODS.md §2.2), done on the channel-dependency graph of any
functional model built from `StripeConv2D`:

* every pruned stripe conv becomes a `CompactStripeConv2D` holding only the
  stripes with `|FS| > threshold` (kernel and skeleton folded);
* a conv whose output group is removable (see `skeleton.skeleton_plan`)
  loses its filters without stripes, and so do the BN on that group and
  the input channels of every conv/dense layer reading it (a dense layer
  after `Flatten` loses the matching features);
* projection-shortcut stripe convs are kept as they are (the reference
  never compacts its `downsample`);
* a residual branch cut by a conv without any stripe (its output no longer
  depends on the input) is removed. By default (`dead_branches=
  "constant"`) the merge adds the branch's constant output instead
  (`BranchConstant`), which keeps the logits equal to the hard-masked
  model's. `dead_branches="shortcut"` is the reference: the block becomes
  its shortcut -- the `Add` is bypassed and so is the activation that is
  its only reader, losing the branch's constant BN output and the final
  ReLU (not function-preserving). `CompactResult.removed_blocks` lists the
  merges whose branches were removed;
* a conv without stripes on a path nothing bypasses (e.g. any VGG layer)
  cannot be compacted: `StripePruningError` names it.

Everything else is copied. The result is a new functional model with the
same layer names; its logits equal those of `hard_mask(model, threshold)`
(with `dead_branches="shortcut"`: when no block was removed).
"""

import dataclasses

import keras
import numpy as np
from absl import logging

from tfgraft import complexity
from tfgraft import graph as graph_lib
from tfgraft.layers.stripe_conv import check_threshold
from tfgraft.stripe import skeleton as skeleton_lib
from tfgraft.stripe.skeleton import StripePruningError

@dataclasses.dataclass(frozen=True)
class LayerStripes:
    """What survived in one pruned stripe conv.

    Attributes:
        name: layer name.
        kernel_size: `(kh, kw)`.
        kept_stripes: stripes with `|FS| > threshold`.
        stripes: all stripes (`kh * kw * filters`).
        kept_filters: filters with at least one stripe.
        filters: all filters.
        per_position: `kh x kw` nested list: filters keeping each position.
        removable: whether dead filters are removed (not only zeroed).
        formulation: the compact layer's resolved formulation, if built.
    """

    name: str
    kernel_size: tuple
    kept_stripes: int
    stripes: int
    kept_filters: int
    filters: int
    per_position: list
    removable: bool
    formulation: str | None = None


@dataclasses.dataclass(frozen=True)
class CompactResult:
    """Output of `compact`.

    Attributes:
        model: the compact Keras model.
        layers: `LayerStripes` of every pruned stripe conv, in order.
        removed_blocks: names of the merge layers (`Add`) bypassed because a
            branch lost every stripe of one conv, with that conv's name:
            `[(add_name, conv_name), ...]`.
    """

    model: keras.Model
    layers: tuple
    removed_blocks: tuple


def _plan_for(model, plan):
    """`model`'s `SkeletonPlan`: `plan` checked against it, or a new one.

    A plan names the layers of the model it was made for; another model
    built by the same function usually has other (auto-generated) names, so
    a plan is never reused across models.
    """
    if plan is None:
        return skeleton_lib.skeleton_plan(model)
    names = {layer.name for layer in model.layers}
    missing = [n for n in (*plan.names(), *plan.free) if n not in names]
    if missing:
        raise ValueError(
            f"plan names layer '{missing[0]}', which model '{model.name}' "
            "does not have: a SkeletonPlan holds the layer names of the "
            "model it was made for. Pass plan=skeleton_plan(model) for this "
            f"model, or plan=None. Received: plan={plan}"
        )
    return plan


def _stripe_masks(model, threshold, plan):
    """`(entry, layer, stripe mask)` of every pruned stripe conv."""
    check_threshold(model.name, threshold)
    for entry in _plan_for(model, plan).pruned:
        layer = model.get_layer(entry.name)
        yield entry, layer, layer.stripe_mask(threshold)


def layer_stripes(model, threshold, plan=None):
    """`LayerStripes` of every pruned stripe conv of `model`.

    `plan` is `skeleton_plan(model)` of this very model (computed when
    None); a plan of another model is refused.
    """
    out = []
    for entry, layer, mask in _stripe_masks(model, threshold, plan):
        out.append(
            LayerStripes(
                name=entry.name,
                kernel_size=tuple(layer.kernel_size),
                kept_stripes=int(mask.sum()),
                stripes=int(mask.size),
                kept_filters=int(mask.any(axis=(0, 1)).sum()),
                filters=int(mask.shape[-1]),
                per_position=mask.sum(axis=-1).astype(int).tolist(),
                removable=entry.removable,
            )
        )
    return tuple(out)


def stripe_totals(layers):
    """Kept and all stripes and filters of `LayerStripes`, summed."""
    return {
        "kept_stripes": sum(x.kept_stripes for x in layers),
        "stripes": sum(x.stripes for x in layers),
        "kept_filters": sum(x.kept_filters for x in layers),
        "filters": sum(x.filters for x in layers),
    }


def apply_hard_mask(model, threshold, plan=None):
    """Zeroes dead stripes and the BN channels of dead filters, in place.

    The state a model has right after a training step of the reference,
    re-thresholded: `FS *= |FS| > threshold` for every pruned stripe conv
    and, where the conv's filters are removable, BN gamma/beta of filters
    without stripes set to 0. `plan` as in `layer_stripes`.

    Returns:
        `model`.
    """
    for entry, layer, mask in _stripe_masks(model, threshold, plan):
        fs = layer.filter_skeleton
        fs.assign(fs.numpy() * mask)
        if entry.bn:
            alive = mask.any(axis=(0, 1)).astype(np.float32)
            for var in skeleton_lib.bn_variables(model, entry.bn):
                var.assign(var.numpy() * alive.astype(var.dtype))
    return model


def cost(model, convention):
    """`{"flops", "params"}` of `model` in a complexity convention."""
    c = complexity.count(model, convention)
    return {"flops": int(c.flops), "params": int(c.params)}


def reduction(before, after):
    """Before/after `cost` dicts and the reductions in % (the job's report)."""
    return {
        "before": before,
        "after": after,
        "flops_reduction_pct": 100.0 * (1 - after["flops"] / before["flops"]),
        "params_reduction_pct": 100.0
        * (1 - after["params"] / before["params"]),
    }


def hard_mask(model, threshold):
    """A hard-masked `copy_model` of `model` (see `apply_hard_mask`)."""
    check_threshold(model.name, threshold)
    return apply_hard_mask(copy_model(model), threshold)


def copy_model(model):
    """`keras.models.clone_model` of `model` with its weights, made in the
    current distribution scope (a single-device copy outside any)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="tfgraft")
class BranchConstant(keras.layers.Layer):
    """Adds the constant output of a residual branch that compaction cut.

    When every stripe of a conv inside a residual branch is pruned, the
    branch's output no longer depends on the input: it is the per-channel
    constant its last BN makes of zeros. `compact(...,
    dead_branches="constant")` replaces the branch by this layer, which
    keeps the network's function exactly.

    Args:
        values: per-channel constant (list of floats).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor `(..., channels)`.

    Returns:
        `inputs + values`.

    Example:

    >>> layer = BranchConstant([0.5, -1.0, 0.0, 2.0])
    >>> tuple(layer(keras.ops.zeros((2, 8, 8, 4))).shape)
    (2, 8, 8, 4)
    """

    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = [float(v) for v in values]

    def call(self, inputs):
        return inputs + keras.ops.convert_to_tensor(self.values, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"values": list(self.values)})
        return config


def _is_add(op):
    if isinstance(op, keras.layers.Layer):
        return isinstance(op, keras.layers.Add)
    return type(op).__name__ == "Add"  # `x + y` on symbolic tensors


class _Dead:
    """A tensor that no longer depends on the input (a cut branch)."""

    def __init__(self, origin):
        self.origin = origin


DEAD_BRANCHES = ("constant", "shortcut")


def compact(
    model,
    threshold,
    *,
    formulation="auto",
    jit_compile=False,
    dead_branches="constant",
    calibrate_batch=1,
    name=None,
):
    """Prunes stripes and dead filters; returns the compact model.

    Args:
        model: functional Keras model with `StripeConv2D` layers (trained).
        threshold: stripes with `|FS| <= threshold` are removed.
        formulation: of every compacted layer, as in
            `StripeConv2D.to_compact`; `"calibrate"` times each layer at its
            real input shape (`calibrate_batch` images).
        jit_compile: compile every compact layer as its own XLA cluster
            (kept in exported SavedModels; fastest on CPU, see
            `CompactStripeConv2D`).
        dead_branches: what replaces a residual branch cut by a conv
            without stripes: `"constant"` (default) or `"shortcut"` (the
            reference); see the module docstring.
        calibrate_batch: batch size the `"calibrate"` timings use (the
            serving batch).
        name: name of the new model; default `<model name>_compact`.

    Returns:
        A `CompactResult`.

    Raises:
        StripePruningError: no stripe conv in the model, or a conv without
            any stripe that nothing bypasses.
        ValueError: negative threshold.
    """
    check_threshold(model.name, threshold)
    if dead_branches not in DEAD_BRANCHES:
        raise ValueError(
            f"dead_branches must be one of {DEAD_BRANCHES}. "
            f"Received: dead_branches={dead_branches}"
        )
    builder = _Builder(
        model,
        threshold,
        formulation,
        jit_compile,
        dead_branches,
        calibrate_batch,
    )
    stats = layer_stripes(model, threshold, builder.plan)
    outputs = builder.run()
    stats = tuple(
        dataclasses.replace(s, formulation=builder.formulations.get(s.name))
        for s in stats
    )
    new_model = keras.Model(
        builder.inputs,
        outputs,
        name=name or f"{model.name}_compact",
    )
    return CompactResult(new_model, stats, tuple(builder.removed_blocks))


@dataclasses.dataclass
class _Builder:
    """Re-runs a functional graph with new (sliced / compacted) layers."""

    model: keras.Model
    threshold: float
    formulation: str
    jit_compile: bool
    dead_branches: str
    calibrate_batch: int

    def __post_init__(self):
        self.graph = graph_lib.analyze(self.model)
        self.plan = skeleton_lib.skeleton_plan(self.model, self.graph)
        self.pruned = {p.name: p for p in self.plan.pruned}
        # Kept channels of every group whose producer drops dead filters.
        self.keep = {}
        for entry in self.plan.pruned:
            if entry.removable:
                layer = self.model.get_layer(entry.name)
                alive = layer.stripe_mask(self.threshold).any(axis=(0, 1))
                group = self.graph.nodes[entry.name].out_group
                self.keep[group] = np.flatnonzero(alive)
        self.formulations = {}
        self.removed_blocks = []
        self.inputs = []
        self.new_layers = {}

    # === Channel selections ===

    def _kept(self, name, side):
        """Kept channels of `name`'s input (side 0) or output (1), or None."""
        node = self.graph.nodes.get(name)
        if node is not None:
            groups = (node.in_group, node.out_group)
        else:
            groups = self.graph.layer_groups.get(name) or (None, None)
        return self.keep.get(groups[side])

    # === Graph walk ===

    def run(self):
        values = {}
        consumers = {}
        nodes = graph_lib.ordered_nodes(self.model)
        for node in nodes:
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
        bypassed = set()
        for node in nodes:
            op = node.operation
            if node.is_input:
                for t in node.outputs:
                    if id(t) not in values:
                        new = keras.Input(
                            shape=t.shape[1:], dtype=t.dtype, name=op.name
                        )
                        self.inputs.append(new)
                        values[id(t)] = new
                continue
            ins = [values[id(t)] for t in node.input_tensors]
            dead = [x for x in ins if isinstance(x, _Dead)]
            if _is_add(op) and len(ins) > 1 and dead:
                out, shortcut = self._bypass(op, node, ins, dead)
                if shortcut:
                    bypassed.add(id(node.outputs[0]))
                values[id(node.outputs[0])] = out
                continue
            if dead:
                for t in node.outputs:
                    values[id(t)] = dead[0]
                continue
            src = node.input_tensors[0] if node.input_tensors else None
            if (
                isinstance(op, graph_lib.ACTIVATIONS)
                and src is not None
                and id(src) in bypassed
                and consumers.get(id(src)) == 1
            ):
                # The removed block's closing activation goes with it.
                values[id(node.outputs[0])] = ins[0]
                continue
            outs = self._apply(op, node, values)
            for t, v in zip(node.outputs, keras.tree.flatten(outs)):
                values[id(t)] = v
        outputs = []
        for t in self.model.outputs:
            value = values[id(t)]
            if isinstance(value, _Dead):
                raise StripePruningError(
                    f"Every stripe of layer '{value.origin}' is pruned (|FS| "
                    "<= {threshold}) and no shortcut bypasses it: the "
                    "compact network would be cut. Lower {threshold!n} (or "
                    "train with a lower {sr!n}).",
                    threshold=self.threshold,
                )
            outputs.append(value)
        return outputs[0] if len(outputs) == 1 else outputs

    def _bypass(self, op, node, ins, dead):
        """Output of a merge with cut branches, and whether it is a
        reference-style shortcut (whose closing activation goes too)."""
        live = [x for x in ins if not isinstance(x, _Dead)]
        if not live:
            return dead[0], False
        for d in dead:
            self.removed_blocks.append((op.name, d.origin))
        if len(live) == 1:
            out = live[0]
        else:
            out = op.__class__.from_config(op.get_config())(live)
        if self.dead_branches == "shortcut":
            return out, True
        cut = [
            t for t, x in zip(node.input_tensors, ins) if isinstance(x, _Dead)
        ]
        constant = self._branch_constant(op.name, cut)
        if constant is None:
            return out, True
        layer = BranchConstant(constant, name=f"{op.name}_branch_constant")
        return layer(out), False

    def _branch_constant(self, name, tensors):
        """The per-channel constant the cut branches add, or None.

        A cut branch no longer depends on the input (a conv without
        stripes outputs zeros; a hard-masked BN turns them into zeros or a
        per-channel constant). Evaluated on two different inputs and
        checked to be spatially constant, so a branch that is not (e.g. a
        BN that was not hard-masked feeding a conv with zero padding) falls
        back to the reference's shortcut.
        """
        probe = keras.Model(self.model.inputs, tensors)
        shape = (2,) + tuple(self.model.inputs[0].shape[1:])
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, shape).astype("float32")
        total = 0.0
        for out in keras.tree.flatten(probe(x, training=False)):
            out = np.asarray(keras.ops.convert_to_numpy(out), np.float64)
            c = out[0, 0, 0]
            tol = 1e-5 * (1.0 + np.abs(c).max())
            if np.abs(out - c).max() > tol:
                logging.warning(
                    "Cut branch into '%s' is not constant; dropping it "
                    "with its activation as the reference does.",
                    name,
                )
                return None
            total = total + c
        return total.astype(np.float32).tolist()

    def _apply(self, op, node, values):
        if op.name in self.pruned:
            return self._compact_conv(op, node, values)
        layer = self.new_layers.get(op.name)
        first_call = layer is None
        if first_call:
            layer = op.__class__.from_config(op.get_config())
            self.new_layers[op.name] = layer
        args, kwargs = node.arguments.fill_in(values)
        out = layer(*args, **kwargs)
        if first_call:  # built by the call
            self._copy_weights(op, layer)
        return out

    def _compact_conv(self, op, node, values):
        if not op.stripe_mask(self.threshold).any():
            return _Dead(op.name)
        (x,), _ = node.arguments.fill_in(values)
        calibrate_shape = None
        if self.formulation == "calibrate":
            if any(d is None for d in x.shape[1:]):
                raise ValueError(
                    f"formulation='calibrate' needs the static input shape "
                    f"of layer '{op.name}'. Received: {tuple(x.shape)}"
                )
            calibrate_shape = (self.calibrate_batch, *x.shape[1:])
        layer = op.to_compact(
            self.threshold,
            in_channels=self._kept(op.name, 0),
            filters=self._kept(op.name, 1),
            formulation=self.formulation,
            jit_compile=self.jit_compile,
            calibrate_shape=calibrate_shape,
        )
        self.formulations[op.name] = layer._resolved
        return layer(x)

    # === Weights ===

    def _copy_weights(self, old, new):
        if not old.weights:
            return
        in_keep = self._kept(old.name, 0)
        out_keep = self._kept(old.name, 1)
        weights = old.get_weights()
        if isinstance(old, keras.layers.BatchNormalization):
            if out_keep is not None:
                weights = [w[out_keep] for w in weights]
        elif isinstance(old, keras.layers.Dense):
            if in_keep is not None:
                node = self.graph.nodes[old.name]
                c = weights[0].shape[0] // node.in_spatial
                rows = (
                    np.arange(node.in_spatial)[:, None] * c + in_keep[None, :]
                ).reshape(-1)
                weights[0] = weights[0][rows]
        elif isinstance(old, keras.layers.Conv2D):  # StripeConv2D too
            if in_keep is not None:
                weights[0] = weights[0][:, :, in_keep, :]
            if out_keep is not None:
                # Kernel, bias and a stripe conv's skeleton.
                weights = [
                    w[..., out_keep] if w.shape[-1] == old.filters else w
                    for w in weights
                ]
        new.set_weights(weights)
