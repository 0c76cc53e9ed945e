"""Fitting numbers under compression: fine-tuning with constraints in force (``finetune``), the
student / distillation loop (``student``), structured pruning's layer rebuild (``neurons``),
tensor decompositions (``tensor_fit``) and TensoRF grids as CP terms (``grid_terms``)."""
