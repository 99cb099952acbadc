"""Element types and static tensor types, with overflow-checked sizes."""
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..errors import ShapeError, UnsupportedTypeError

MAX_RANK = 16                 # a tiny model declaring rank 10**6 must not allocate anything
MAX_ELEMENTS = 1 << 40        # no tensor this large fits any machine we target


class DType(Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"
    int8 = "int8"
    int16 = "int16"
    int32 = "int32"
    int64 = "int64"
    uint8 = "uint8"
    uint16 = "uint16"
    uint32 = "uint32"
    uint64 = "uint64"
    bool = "bool"

    @property
    def numpy(self):
        return np.dtype(self.value)

    @property
    def itemsize(self):
        return self.numpy.itemsize

    @property
    def is_float(self):
        return self in (DType.float32, DType.float64, DType.float16)

    @property
    def is_unsigned(self):
        return self.value.startswith("uint") or self == DType.bool

    @staticmethod
    def from_numpy(dt):
        try:
            return DType(np.dtype(dt).name)
        except (ValueError, TypeError):
            raise UnsupportedTypeError(f"unsupported element type {dt}") from None


float32, float64, int32, int64, boolean = DType.float32, DType.float64, DType.int32, DType.int64, DType.bool


def checked_size(shape):
    """Element count of `shape`, rejecting negative dims, huge ranks and overflow."""
    if len(shape) > MAX_RANK:
        raise ShapeError(f"rank {len(shape)} exceeds the maximum of {MAX_RANK}")
    n = 1
    for d in shape:
        if not isinstance(d, (int, np.integer)) or d < 0:
            raise ShapeError(f"invalid dimension {d!r} in shape {tuple(shape)}")
        n *= int(d)
        if n > MAX_ELEMENTS:
            raise ShapeError(f"shape {tuple(shape)} has too many elements")
    return n


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        checked_size(self.shape)

    @property
    def rank(self):
        return len(self.shape)

    @property
    def size(self):
        return checked_size(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __str__(self):
        return f"{self.dtype.value}[{', '.join(map(str, self.shape))}]"
