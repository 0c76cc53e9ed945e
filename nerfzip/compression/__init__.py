"""Compression of radiance fields, laid out as the pipeline runs:

- ``pipeline/``: text / YAML specs, named presets and the runner;
- ``registry``: every pass under a stable name with its typed Config (the Python API, the CLI
  listing and the README table come from it);
- ``passes/``: one module per pass (prune, quant, half, vq, low_rank, tensor_decompose,
  reduce_rank, convert, finetune, distill);
- ``constraints/``: one module per constraint a pass leaves on a tensor (mask, quantization
  grid, half, codebook, factorisation), each owning its projection, fine-tuning
  parametrisation, merge rule and storage spec;
- ``compressed``: the model + its constraints + history, and ``save``;
- ``analysis/``: what passes measure first (importance);
- ``allocate/``: one budget allocator (Lagrangian + greedy) for the settings per tensor or
  layer that ``quant``, ``vq`` and ``low_rank`` choose under a ``budget``;
- ``fit/``: the optimisation passes run (fine-tuning, distillation, layer rebuilds, tensor fits).
"""
