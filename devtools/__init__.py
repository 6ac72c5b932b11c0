"""Development tools: the local stack, the simulator and the demo. Not part of the product."""
