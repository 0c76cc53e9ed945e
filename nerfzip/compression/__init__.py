"""Compression passes (prune, quantize, vector-quantize, fine-tune) and pipelines of them."""
