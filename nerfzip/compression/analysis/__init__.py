"""What a field holds and where it matters, read before compressing: importance of grid entries
from training rays (``importance``)."""
