"""Stateless, vectorised image augmentation on the 0-255 scale.

Every random draw here comes from a stateless op keyed by an explicit int64
`[2]` seed, so a training batch is a pure function of `(seed, step)`: a run
that resumes at step k sees exactly the batches the first run saw, and each
grafted net gets its own augmentation stream from its own seed.

Recipes (torchvision equivalents in brackets):

* `"cifar"`: zero-pad 4 px, random crop back to the input size, random
  horizontal flip [`RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`].
* `"imagenet"`: random-resized crop with scale (0.08, 1) and aspect ratio
  (3/4, 4/3) to the output size, random horizontal flip
  [`RandomResizedCrop(224)`, `RandomHorizontalFlip()`]; evaluation resizes
  the shorter side to 256 and centre-crops 224 [`Resize(256)`,
  `CenterCrop(224)`].
* `"none"`: no random augmentation (the evaluation transform).

`flip=False` (the `tfgraft.config.DataConfig` knob) drops the horizontal
flip from both recipes and keeps everything else, crops included, exactly
as drawn with the flip on (the reference LW-DNA ImageNet loader trains
without flip, METHODS §4.5).

On top, `DataConfig` can switch on keras-cv's RandAugment and MixUp /
CutMix (the latter two reimplemented here with stateless ops, following
keras-cv's definitions, because keras-cv draws from stateful generators).
keras-cv is imported here only, for RandAugment. Keras 3's own
`keras.layers.RandAugment` ignores its seed argument and computes all
eleven operations per image to pick two; README "Dependencies" has the
measurements that rule it out (`bench/randaugment.py`).
"""

import math

import tensorflow as tf

CIFAR_PADDING = 4
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10
# Evaluation resize: shorter side = crop / 0.875 (256 for a 224 crop).
EVAL_CROP_FRACTION = 0.875


def split_seed(seed, num):
    """`num` independent `[2]` int64 seeds derived from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


# --------------------------------------------------------------------------
# CIFAR recipe.


def pad_crop_flip(images, seed, padding=CIFAR_PADDING, flip=True):
    """Zero-pad, random crop back to size and random flip, per image.

    Both the crop and the flip are one index gather each (`batch_dims=1`),
    so a whole batch costs two gathers, not a per-image loop.

    Args:
        images: `[B, H, W, C]` tensor of any dtype (pixel values).
        seed: int64 `[2]` seed.
        padding: zero padding on every side, in pixels.
        flip: whether to flip (the crops do not depend on it).

    Returns:
        float32 `[B, H, W, C]`.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    offset_seed, flip_seed = split_seed(seed, 2)
    offsets = tf.random.stateless_uniform(
        [batch, 2],
        offset_seed,
        minval=0,
        maxval=2 * padding + 1,
        dtype=tf.int32,
    )
    flips = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    # The flips are drawn either way, so flip=False keeps every crop.
    flips = tf.logical_and(flips, bool(flip))
    padded = tf.pad(
        images, [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    )
    rows = offsets[:, 0:1] + tf.range(height)[None, :]
    columns = tf.range(width)
    # Flipping the crop = reading its columns backwards.
    columns = tf.where(flips[:, None], width - 1 - columns, columns[None, :])
    columns = offsets[:, 1:2] + columns
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, columns, axis=2, batch_dims=1)
    return tf.cast(out, tf.float32)


# --------------------------------------------------------------------------
# ImageNet recipe.


def random_resized_crop_boxes(
    height, width, seed, scale=RRC_SCALE, ratio=RRC_RATIO
):
    """Samples torchvision `RandomResizedCrop` boxes, one per image.

    Same algorithm as torchvision: up to ten tries of a target area
    fraction in `scale` and a log-uniform aspect ratio in `ratio`; the first
    box that fits wins, else a centre crop of the whole image clamped to
    `ratio`.

    Args:
        height: int `[B]` image heights.
        width: int `[B]` image widths.
        seed: int64 `[2]` seed.
        scale: area fraction range.
        ratio: width / height range.

    Returns:
        `(top, left, crop_height, crop_width)`, int32 `[B]` each.
    """
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    batch = tf.shape(height)[0]
    area_seed, ratio_seed, top_seed, left_seed = split_seed(seed, 4)
    shape = [batch, RRC_ATTEMPTS]
    target = (height * width)[:, None] * tf.random.stateless_uniform(
        shape, area_seed, scale[0], scale[1]
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            shape, ratio_seed, math.log(ratio[0]), math.log(ratio[1])
        )
    )
    crop_w = tf.round(tf.sqrt(target * aspect))
    crop_h = tf.round(tf.sqrt(target / aspect))
    fits = (
        (crop_w > 0)
        & (crop_h > 0)
        & (crop_w <= width[:, None])
        & (crop_h <= height[:, None])
    )
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    crop_w = tf.gather(crop_w, first, axis=1, batch_dims=1)
    crop_h = tf.gather(crop_h, first, axis=1, batch_dims=1)

    in_ratio = width / height
    fallback_w = tf.where(
        in_ratio > ratio[1], tf.round(height * ratio[1]), width
    )
    fallback_h = tf.where(
        in_ratio < ratio[0], tf.round(width / ratio[0]), height
    )
    crop_w = tf.where(found, crop_w, fallback_w)
    crop_h = tf.where(found, crop_h, fallback_h)

    def offset(seed, room):
        # torchvision: randint(0, room + 1) when found, room // 2 otherwise.
        draw = tf.random.stateless_uniform([batch], seed) * (room + 1)
        return tf.where(found, tf.floor(draw), tf.floor(room / 2))

    top = offset(top_seed, height - crop_h)
    left = offset(left_seed, width - crop_w)
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


def random_resized_crop_flip_image(image, seed, size, flip=True):
    """RandomResizedCrop + flip of one image of any size.

    Crops with a slice and resizes with an antialiased bilinear filter (what
    PIL does for torchvision), so large source images do not alias.

    Args:
        image: `[h, w, 3]` tensor.
        seed: int64 `[2]` seed.
        size: `(height, width)` of the output.
        flip: whether to flip (the crop does not depend on it).

    Returns:
        float32 `[height, width, 3]`.
    """
    box_seed, flip_seed = split_seed(seed, 2)
    shape = tf.shape(image)
    top, left, crop_h, crop_w = random_resized_crop_boxes(
        shape[0:1], shape[1:2], box_seed
    )
    crop = tf.slice(
        image, [top[0], left[0], 0], [crop_h[0], crop_w[0], shape[2]]
    )
    out = tf.image.resize(
        tf.cast(crop, tf.float32), size, method="bilinear", antialias=True
    )
    if flip:
        flips = tf.random.stateless_uniform([], flip_seed) < 0.5
        out = tf.cond(flips, lambda: tf.reverse(out, axis=[1]), lambda: out)
    return tf.ensure_shape(out, [size[0], size[1], 3])


def random_resized_crop_flip(images, seed, size, flip=True):
    """RandomResizedCrop + flip of a batch of equal-size images.

    One `crop_and_resize` call for the batch (bilinear, no antialiasing:
    meant for in-memory sets of small images).

    Args:
        images: `[B, H, W, C]` tensor.
        seed: int64 `[2]` seed.
        size: `(height, width)` of the output.
        flip: whether to flip (the crops do not depend on it).

    Returns:
        float32 `[B, height, width, C]`.
    """
    box_seed, flip_seed = split_seed(seed, 2)
    shape = tf.shape(images)
    batch = shape[0]
    height = tf.fill([batch], shape[1])
    width = tf.fill([batch], shape[2])
    top, left, crop_h, crop_w = random_resized_crop_boxes(
        height, width, box_seed
    )
    # crop_and_resize maps box corners onto pixel centres 0 .. H-1.
    h_scale = tf.cast(tf.maximum(shape[1] - 1, 1), tf.float32)
    w_scale = tf.cast(tf.maximum(shape[2] - 1, 1), tf.float32)
    top = tf.cast(top, tf.float32)
    left = tf.cast(left, tf.float32)
    boxes = tf.stack(
        [
            top / h_scale,
            left / w_scale,
            (top + tf.cast(crop_h, tf.float32) - 1) / h_scale,
            (left + tf.cast(crop_w, tf.float32) - 1) / w_scale,
        ],
        axis=1,
    )
    out = tf.image.crop_and_resize(
        tf.cast(images, tf.float32), boxes, tf.range(batch), size
    )
    if not flip:
        return out
    flips = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    return tf.where(flips[:, None, None, None], tf.reverse(out, axis=[2]), out)


def resize_center_crop(image, size):
    """Evaluation transform: shorter side to size / 0.875, centre crop.

    Works on one `[h, w, C]` image or a `[B, h, w, C]` batch of equal-size
    images. Matches torchvision `Resize(256)` (the longer side is truncated
    to an int) and `CenterCrop(224)` (offsets rounded).

    Returns:
        float32 images of spatial size `size`.
    """
    crop_h, crop_w = size
    target = int(round(min(crop_h, crop_w) / EVAL_CROP_FRACTION))
    shape = tf.shape(image)
    height = tf.cast(shape[-3], tf.float32)
    width = tf.cast(shape[-2], tf.float32)
    short = tf.minimum(height, width)
    new_h = tf.where(
        height <= width, float(target), tf.floor(target * height / short)
    )
    new_w = tf.where(
        width <= height, float(target), tf.floor(target * width / short)
    )
    new_h = tf.cast(new_h, tf.int32)
    new_w = tf.cast(new_w, tf.int32)
    resized = tf.image.resize(
        tf.cast(image, tf.float32),
        tf.stack([new_h, new_w]),
        method="bilinear",
        antialias=True,
    )
    top = tf.cast(tf.round(tf.cast(new_h - crop_h, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - crop_w, tf.float32) / 2), tf.int32)
    out = resized[..., top : top + crop_h, left : left + crop_w, :]
    static = list(image.shape)
    static[-3:-1] = [crop_h, crop_w]
    return tf.ensure_shape(out, static)


# --------------------------------------------------------------------------
# Batch-level extras.


def _sample_beta(seed, alpha, shape):
    seed_a, seed_b = split_seed(seed, 2)
    a = tf.random.stateless_gamma(shape, seed_a, alpha=alpha)
    b = tf.random.stateless_gamma(shape, seed_b, alpha=alpha)
    # Guard the 0 / 0 that tiny alphas can produce in float32.
    return a / tf.maximum(a + b, 1e-12)


def _partners(perm_seed, lam_seed, alpha, batch):
    """Each image's partner (a permutation of the batch) and its own
    Beta(alpha, alpha) weight."""
    order = tf.random.experimental.stateless_shuffle(
        tf.range(batch), seed=perm_seed
    )
    return order, _sample_beta(lam_seed, alpha, [batch])


def _mix(x, weight, order):
    """`weight * x + (1 - weight) * x[order]`."""
    return weight * x + (1.0 - weight) * tf.gather(x, order)


def mixup(images, labels, seed, alpha):
    """keras-cv `MixUp` with stateless draws: per-image Beta(alpha, alpha).

    Args:
        images: float32 `[B, H, W, C]`.
        labels: float32 one-hot `[B, K]`.
        seed: int64 `[2]` seed.
        alpha: Beta parameter.

    Returns:
        `(images, labels)`, each mixed with a permutation of the batch.
    """
    perm_seed, lam_seed = split_seed(seed, 2)
    batch = tf.shape(images)[0]
    order, lam = _partners(perm_seed, lam_seed, alpha, batch)
    images = _mix(images, lam[:, None, None, None], order)
    return images, _mix(labels, lam[:, None], order)


def cutmix(images, labels, seed, alpha):
    """keras-cv `CutMix` with stateless draws.

    Each image gets a box of side `sqrt(1 - lambda)` times the image side at
    a uniform centre (clipped at the border) pasted from its partner in a
    permutation of the batch; its label is mixed by the pasted area.
    Arguments and result as `mixup`'s.
    """
    perm_seed, lam_seed, center_seed = split_seed(seed, 3)
    shape = tf.shape(images)
    batch = shape[0]
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    order, lam = _partners(perm_seed, lam_seed, alpha, batch)
    cut = tf.sqrt(1.0 - lam)
    center = tf.random.stateless_uniform([batch, 2], center_seed)
    cy = tf.floor(center[:, 0] * height)
    cx = tf.floor(center[:, 1] * width)
    half_h = tf.floor(cut * height / 2)
    half_w = tf.floor(cut * width / 2)
    y0 = tf.clip_by_value(cy - half_h, 0.0, height)
    y1 = tf.clip_by_value(cy + half_h, 0.0, height)
    x0 = tf.clip_by_value(cx - half_w, 0.0, width)
    x1 = tf.clip_by_value(cx + half_w, 0.0, width)
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])
    in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])
    box = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    images = tf.where(box, tf.gather(images, order), images)
    pasted = (y1 - y0) * (x1 - x0) / (height * width)
    return images, _mix(labels, (1.0 - pasted)[:, None], order)


def mix_batch(images, labels, seed, num_classes, config):
    """Applies MixUp and/or CutMix; labels become float32 `[B, K]`."""
    labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
    choose_seed, mix_seed = split_seed(seed, 2)
    if config.mixup_alpha > 0.0 and config.cutmix_alpha > 0.0:
        use_cutmix = tf.random.stateless_uniform([], choose_seed) < 0.5
        return tf.cond(
            use_cutmix,
            lambda: cutmix(images, labels, mix_seed, config.cutmix_alpha),
            lambda: mixup(images, labels, mix_seed, config.mixup_alpha),
        )
    if config.cutmix_alpha > 0.0:
        return cutmix(images, labels, mix_seed, config.cutmix_alpha)
    return mixup(images, labels, mix_seed, config.mixup_alpha)


def _import_keras_cv():
    try:
        import keras_cv
    except ImportError as e:
        raise ImportError(
            "RandAugment needs keras-cv, which is not installed: pip install "
            "'keras-cv>=0.9,<1' (README \"Dependencies\")"
        ) from e
    return keras_cv


class RandAugmenter:
    """`keras_cv.layers.RandAugment`, reseeded from the batch seed per image.

    keras-cv draws from `tf.random.Generator`s owned by its sub-layers (and
    by default from TensorFlow's global generator). Each sub-layer gets a
    private generator here, and before every image all of them are reset to
    states derived from `(batch seed, image index)`; images then go through
    one at a time, so the output is a pure function of the batch seed and
    the global generator is never touched. Calls must not overlap (use a
    sequential `map`).
    """

    def __init__(self, magnitude=0.5, layers=2):
        if not 0.0 <= magnitude <= 1.0:
            raise ValueError(
                f"RandAugment magnitude must be in [0, 1]. Received: "
                f"magnitude={magnitude}"
            )
        if layers < 1:
            raise ValueError(
                f"RandAugment layers must be >= 1. Received: layers={layers}"
            )
        keras_cv = _import_keras_cv()

        self.layer = keras_cv.layers.RandAugment(
            value_range=(0, 255),
            augmentations_per_image=layers,
            magnitude=magnitude,
            magnitude_stddev=0.0,
            seed=0,
        )
        self._generators = []
        for index, layer in enumerate(self.layer._flatten_layers()):
            if not isinstance(
                getattr(layer, "_random_generator", None), tf.random.Generator
            ):
                continue
            generator = tf.random.Generator.from_seed(index)
            layer._random_generator = generator
            self._generators.append(generator)
            # Factor samplers call stateful tf.random ops; redirect them to
            # the layer's (resettable) generator.
            for name, value in list(vars(layer).items()):
                if isinstance(value, keras_cv.core.FactorSampler):
                    setattr(layer, name, _GeneratorSampler(value, generator))

    def __call__(self, images, seed):
        def augment_one(args):
            image, index = args
            key = tf.random.experimental.stateless_fold_in(seed, index)
            for number, generator in enumerate(self._generators):
                generator.reset(
                    tf.random.stateless_uniform(
                        generator.state.shape,
                        tf.random.experimental.stateless_fold_in(key, number),
                        minval=None,
                        maxval=None,
                        dtype=generator.state.dtype,
                    )
                )
            return self.layer(image)

        indices = tf.range(tf.shape(images, out_type=tf.int64)[0])
        return tf.map_fn(
            augment_one,
            (images, indices),
            fn_output_signature=tf.float32,
            parallel_iterations=1,
        )


class _GeneratorSampler:
    """A keras-cv factor sampler that draws from a `tf.random.Generator`."""

    def __init__(self, sampler, generator):
        keras_cv = _import_keras_cv()

        self._generator = generator
        if isinstance(sampler, keras_cv.core.UniformFactorSampler):
            self._kind = "uniform"
            self._args = (sampler.lower, sampler.upper)
        elif isinstance(sampler, keras_cv.core.NormalFactorSampler):
            self._kind = "normal"
            self._args = (
                sampler.mean,
                sampler.stddev,
                sampler.min_value,
                sampler.max_value,
            )
        elif isinstance(sampler, keras_cv.core.ConstantFactorSampler):
            self._kind = "constant"
            self._args = (sampler.value,)
        else:
            raise ValueError(
                f"Unsupported keras-cv factor sampler. Received: {sampler!r}"
            )

    def __call__(self, shape=(), dtype="float32"):
        if self._kind == "uniform":
            low, high = self._args
            return self._generator.uniform(shape, low, high, dtype=dtype)
        if self._kind == "normal":
            mean, stddev, low, high = self._args
            sample = self._generator.normal(shape, mean, stddev, dtype=dtype)
            return tf.clip_by_value(sample, low, high)
        return tf.ones(shape, dtype) * self._args[0]
