"""The tensor codecs, one module each; importing this package registers them all.

Adding a codec: a new module here that calls ``register_codec`` with an unused id, its line
below, and its test. Ids are stable forever (docs/format.md): raw 1, half 2, quant 3, vq 4,
sparse 5, lowrank 6, symbols 7, tucker 8, cp 9, learned 10,
learned_context 11.
"""

from nerfzip.codec.codecs import (  # noqa: F401  (imported for their registration)
    cp,
    half,
    learned,
    learned_context,
    lowrank,
    quant,
    raw,
    sparse,
    symbols,
    tucker,
    vq,
)
