"""GraftConv2D: a Conv2D that reports its information for Filter Grafting."""

import keras

from tfgraft.grafting import criteria

_CRITERIA = ("entropy", "l1")
_LEVELS = ("layer", "filter")


@keras.saving.register_keras_serializable(package="tfgraft")
class GraftConv2D(keras.layers.Conv2D):
    """2D convolution that reports how much information its kernel carries.

    Filter Grafting mixes the weights of nets trained side by side; the mixing
    coefficient of a layer comes from the difference of the two layers'
    information. This layer is a plain `keras.layers.Conv2D` (same call,
    same weights, so it saves and exports like one) whose `information()`
    computes that information from the current kernel, in-graph: the
    histogram entropy of the kernel (`criteria.entropy`, 10 bins) or its L1
    norm, either for the whole layer (a scalar) or per output filter (a
    vector, for filter-level criteria and invalid-filter counts).

    Args:
        filters: number of output filters, as in `Conv2D`.
        kernel_size: as in `Conv2D`.
        *args: further positional `Conv2D` arguments (`strides`,
            `padding`, ...), so the layer is a drop-in replacement.
        criterion: `"entropy"` or `"l1"`.
        level: `"layer"` (one value for the kernel) or `"filter"` (one value
            per output filter).
        **kwargs: `Conv2D` and base layer keyword arguments.

    Call arguments:
        inputs: a 4D tensor, as for `Conv2D`.

    Returns:
        The `Conv2D` output.

    Example:

    >>> layer = GraftConv2D(8, 3, padding="same", level="filter")
    >>> tuple(layer(keras.ops.zeros((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)
    >>> tuple(layer.information().shape)
    (8,)

    Reference:
        - [Meng et al., "Filter Grafting for Deep Neural Networks",
          CVPR 2020](https://arxiv.org/abs/2001.05868)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        *args,
        criterion="entropy",
        level="layer",
        **kwargs,
    ):
        if criterion not in _CRITERIA:
            raise ValueError(
                f"GraftConv2D criterion must be one of {_CRITERIA}. "
                f"Received: criterion={criterion}"
            )
        if level not in _LEVELS:
            raise ValueError(
                f"GraftConv2D level must be one of {_LEVELS}. "
                f"Received: level={level}"
            )
        super().__init__(filters, kernel_size, *args, **kwargs)
        self.criterion = criterion
        self.level = level

    def information(self):
        """The kernel's information under `criterion` at `level`.

        Returns:
            A float32 scalar (`level="layer"`) or a `[filters]` vector
            (`level="filter"`), computed from the current kernel.
        """
        if not self.built:
            raise ValueError(
                f"GraftConv2D {self.name!r} has no kernel yet: call or build "
                "it before information()."
            )
        # Read the variable once so the criteria see a plain tensor.
        kernel = keras.ops.convert_to_tensor(self.kernel)
        if self.level == "layer":
            if self.criterion == "entropy":
                return criteria.entropy(kernel)
            return criteria.l1(kernel)
        if self.criterion == "entropy":
            return criteria.filter_entropy(kernel)
        return criteria.filter_l1(kernel)

    def get_config(self):
        config = super().get_config()
        config.update({"criterion": self.criterion, "level": self.level})
        return config
