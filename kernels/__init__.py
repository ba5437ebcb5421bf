"""The maths of the category core: Lab, category conversion (Eq. 5-8) and its inverse (Eq. 16).

Numba kernels fill caller-allocated buffers behind one JIT switch (`kernels.jit`); the functions
exported here check their inputs and accept NumPy arrays or torch tensors on any device.
"""

from kernels.api import decode_bins, encode_ab, encode_bins, encode_targets, image_targets, rgb_to_lab
from kernels.gamut import CENTERS, Q

__all__ = ["CENTERS", "Q", "decode_bins", "encode_ab", "encode_bins", "encode_targets", "image_targets", "rgb_to_lab"]
