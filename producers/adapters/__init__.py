"""The welfare system adapter (authority side) and the employment system adapter (Hello Work side)."""
