"""Importers for radiance fields trained by other tools, mapped exactly onto nerfzip fields.

Checkpoints are read only through loaders that cannot execute code (``torch.load`` with
``weights_only=True``); architectures are read from the tensor shapes, never from the other
tool's configuration files.

- ``nerf_pytorch``: krrish94/nerf-pytorch ``FlexibleNeRFModel`` checkpoints -> ``mlp-nerf``.

Every importer is ``import_<tool>(checkpoint, scene, downscale=None) -> RadianceModel``, the
same function as ``nerfzip.import_<tool>`` (the bare field and its report:
``<tool>_field(checkpoint, aabb)``).
"""
