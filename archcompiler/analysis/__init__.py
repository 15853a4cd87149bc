"""What archc computes about a graph without any framework: costs under named conventions,
settings that fit a budget, and the inference rewrite (BatchNorm folding, merged pads)."""
