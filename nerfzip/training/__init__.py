"""Training radiance fields from posed images: configuration, loop, checkpoints."""
