"""Volume rendering: pure compositing functions, ray samplers, the occupancy grid and the
renderer that puts them together over a field."""
