"""Lowering: a validated spec -> the graph IR (expand, then infer), plus the graph surgery
users ask for on the way (heads: the classifier options; features: multi-output cuts)."""
