"""Estimates of the direction dx from an input to the closest example of the other class (SPEC 5): the direct
estimate (a generator trained as a modified VRGAN, direct.py)."""
from advpipe.estimate.direct import MLPGenerator, UNetGenerator, bce_one_logit, estimate_dx, train_vrgan

__all__ = ["MLPGenerator", "UNetGenerator", "bce_one_logit", "estimate_dx", "train_vrgan"]
