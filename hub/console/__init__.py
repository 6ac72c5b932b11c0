"""The operator console (``hub run console``): server-rendered pages over ``consumers.monitoring``."""
