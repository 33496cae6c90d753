"""What a layer adds to Keras' saving: its variables and its arguments.

`OwnVariablesMixin` saves every variable a layer owns in `.keras` files;
`OwnConfigMixin` writes the constructor arguments a layer keeps as
attributes into its config.

Keras' `BaseConv` and `Dense` save exactly `[kernel, bias]` (and LoRA or
quantization state). Layers that add variables (a filter skeleton, channel
masks) or replace the kernel by generated weights (a hypernetwork) would
lose them in a `.keras` file, or fail to load. `OwnVariablesMixin` saves an
explicit, ordered list of the layer's variables instead, and checks the
count on load so a mismatching file fails with the layer's name.

Put the mixins before the Keras base, e.g. `class HyperConv2D(
OwnConfigMixin, OwnVariablesMixin, keras.layers.Conv2D)`, and override
`_saved_variables` where the default (trainable, then non-trainable
variables) is not the layer's state or its order is not stable.
"""

import keras


class OwnVariablesMixin:
    """Saves and loads `_saved_variables()` as `"0"`, `"1"`, ... entries.

    Example:

    >>> import keras
    >>> class MaskedDense(OwnVariablesMixin, keras.layers.Dense):
    ...     def build(self, input_shape):
    ...         super().build(input_shape)
    ...         self.mask = self.add_weight(
    ...             name="mask", shape=(self.units,), trainable=False
    ...         )
    >>> layer = MaskedDense(2)
    >>> layer.build((None, 3))
    >>> [v.name for v in layer._saved_variables()]
    ['kernel', 'bias', 'mask']
    """

    def _saved_variables(self):
        """The variables to save, in a fixed order."""
        return list(self.trainable_variables) + list(
            self.non_trainable_variables
        )

    def _build_bias(self):
        """Sets `self.bias` as `BaseConv.build` does, for an own `build`."""
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
                dtype=self.dtype,
            )

    def save_own_variables(self, store):
        if not self.built:
            return
        for i, variable in enumerate(self._saved_variables()):
            store[str(i)] = variable

    def load_own_variables(self, store):
        if not self.built:
            return
        variables = self._saved_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expected "
                f"{len(variables)} variables, but the file has "
                f"{len(store.keys())}."
            )
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])


class OwnConfigMixin:
    """`get_config` with the attributes named in `_config_attributes`.

    For constructor arguments a layer keeps as attributes of the same
    name; tuples are written as lists and initializers serialised, as a
    JSON config holds them.
    """

    _config_attributes = ()

    def get_config(self):
        config = super().get_config()
        for key in self._config_attributes:
            value = getattr(self, key)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, keras.initializers.Initializer):
                value = keras.initializers.serialize(value)
            config[key] = value
        return config
