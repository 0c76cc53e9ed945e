"""Image quality metrics, evaluation of test views and rendering of camera paths."""
