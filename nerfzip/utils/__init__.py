"""Small shared helpers: file I/O with clear errors and atomic writes, progress bars."""
