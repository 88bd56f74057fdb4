"""Every layer inside a model or layer, found through public attributes.

Keras keeps the list of a layer's sub-layers private (`_flatten_layers`); a walk over what is
public (a model's `layers`, and layers held as attributes, as `SelectiveKernel` holds its
branches) finds the same layers and survives Keras' internals changing.
"""

import keras


def nested_layers(layer):
    """The layers inside `layer` (not itself), each once, in order, depth first."""
    seen, found = {id(layer)}, []

    def children(parent):
        out = list(getattr(parent, "layers", None) or []) if isinstance(parent, keras.Model) \
            else []
        for value in vars(parent).values():
            values = value if isinstance(value, (list, tuple)) else [value]
            out.extend(v for v in values if isinstance(v, keras.layers.Layer))
        return out

    def visit(parent):
        for child in children(parent):
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                visit(child)

    visit(layer)
    return found
