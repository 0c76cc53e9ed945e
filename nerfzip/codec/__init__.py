"""The codec layer: per-tensor codecs and the .nrz container (see docs/format.md)."""
