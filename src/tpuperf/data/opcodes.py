"""The ``node_opcode`` ids of TpuGraphs files, and the op classes that layout pruning needs.

Source of the numbering: ``LEARNED_HLO_OPCODE_LIST`` in ``tpu_graphs/process_data/xla/hlo_opcode.h``
of github.com/google-research-datasets/tpu_graphs, the code that built the dataset (its
``hlo_encoder.cc`` stores ``StringToOpcodeID(inst.opcode())`` as uint8). It is the dataset's own
stable list, not XLA's ``HloOpcode`` enum order: 0 is an unknown opcode, 97 (trace) and 101
(tuple-select) are retired ids that no op uses. Checked on the real files: every configurable
node of a layout file is 26 convolution, 34 dot or 75 reshape, and the in-degrees fit the names
(select 3 operands, parameter/constant/iota 0, add 2, get-tuple-element 1).

The synthetic generator (:mod:`tpuperf.data.synthetic`) writes these same ids.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Opcode(IntEnum):
    """An HLO op's id in ``node_opcode`` (the TpuGraphs numbering, see the module docstring)."""

    ABS = 1
    ADD = 2
    ADD_DEPENDENCY = 3
    AFTER_ALL = 4
    ALL_REDUCE = 5
    ALL_TO_ALL = 6
    ATAN2 = 7
    BATCH_NORM_GRAD = 8
    BATCH_NORM_INFERENCE = 9
    BATCH_NORM_TRAINING = 10
    BITCAST = 11
    BITCAST_CONVERT = 12
    BROADCAST = 13
    CALL = 14
    CEIL = 15
    CHOLESKY = 16
    CLAMP = 17
    COLLECTIVE_PERMUTE = 18
    COUNT_LEADING_ZEROS = 19
    COMPARE = 20
    COMPLEX = 21
    CONCATENATE = 22
    CONDITIONAL = 23
    CONSTANT = 24
    CONVERT = 25
    CONVOLUTION = 26
    COPY = 27
    COPY_DONE = 28
    COPY_START = 29
    COSINE = 30
    CUSTOM_CALL = 31
    DIVIDE = 32
    DOMAIN = 33
    DOT = 34
    DYNAMIC_SLICE = 35
    DYNAMIC_UPDATE_SLICE = 36
    EXPONENTIAL = 37
    EXPONENTIAL_MINUS_ONE = 38
    FFT = 39
    FLOOR = 40
    FUSION = 41
    GATHER = 42
    GET_DIMENSION_SIZE = 43
    SET_DIMENSION_SIZE = 44
    GET_TUPLE_ELEMENT = 45
    IMAG = 46
    INFEED = 47
    IOTA = 48
    IS_FINITE = 49
    LOG = 50
    LOG_PLUS_ONE = 51
    AND = 52
    NOT = 53
    OR = 54
    XOR = 55
    MAP = 56
    MAXIMUM = 57
    MINIMUM = 58
    MULTIPLY = 59
    NEGATE = 60
    OUTFEED = 61
    PAD = 62
    PARAMETER = 63
    PARTITION_ID = 64
    POPCNT = 65
    POWER = 66
    REAL = 67
    RECV = 68
    RECV_DONE = 69
    REDUCE = 70
    REDUCE_PRECISION = 71
    REDUCE_WINDOW = 72
    REMAINDER = 73
    REPLICA_ID = 74
    RESHAPE = 75
    REVERSE = 76
    RNG = 77
    RNG_GET_AND_UPDATE_STATE = 78
    RNG_BIT_GENERATOR = 79
    ROUND_NEAREST_AFZ = 80
    RSQRT = 81
    SCATTER = 82
    SELECT = 83
    SELECT_AND_SCATTER = 84
    SEND = 85
    SEND_DONE = 86
    SHIFT_LEFT = 87
    SHIFT_RIGHT_ARITHMETIC = 88
    SHIFT_RIGHT_LOGICAL = 89
    SIGN = 90
    SINE = 91
    SLICE = 92
    SORT = 93
    SQRT = 94
    SUBTRACT = 95
    TANH = 96
    TRANSPOSE = 98
    TRIANGULAR_SOLVE = 99
    TUPLE = 100
    WHILE = 102
    CBRT = 103
    ALL_GATHER = 104
    COLLECTIVE_PERMUTE_START = 105
    COLLECTIVE_PERMUTE_DONE = 106
    LOGISTIC = 107
    DYNAMIC_RESHAPE = 108
    ALL_REDUCE_START = 109
    ALL_REDUCE_DONE = 110
    REDUCE_SCATTER = 111
    ALL_GATHER_START = 112
    ALL_GATHER_DONE = 113
    OPT_BARRIER = 114
    ASYNC_START = 115
    ASYNC_UPDATE = 116
    ASYNC_DONE = 117
    ROUND_NEAREST_EVEN = 118
    STOCHASTIC_CONVERT = 119
    TAN = 120


# The ops a layout flows through: XLA's elementwise ops (HloInstruction::IsElementwise: unary
# math, conversions, binary arithmetic/logic/compare, clamp and select), whose output takes the
# layout of their operands, so one configurable node's layout choice sets the layout of the
# whole elementwise chain below it. Left out: copy, elementwise in XLA but the op layout
# assignment inserts exactly to change a layout (a chain ends there), and map/fusion, which
# are elementwise only for some bodies that the files do not show.
LAYOUT_PROPAGATING = frozenset(
    {
        Opcode.ABS, Opcode.ADD, Opcode.ATAN2, Opcode.BITCAST_CONVERT, Opcode.CEIL, Opcode.CLAMP,
        Opcode.COUNT_LEADING_ZEROS, Opcode.COMPARE, Opcode.COMPLEX, Opcode.CONVERT, Opcode.COSINE,
        Opcode.DIVIDE, Opcode.EXPONENTIAL, Opcode.EXPONENTIAL_MINUS_ONE, Opcode.FLOOR, Opcode.IMAG,
        Opcode.IS_FINITE, Opcode.LOG, Opcode.LOG_PLUS_ONE, Opcode.AND, Opcode.NOT, Opcode.OR,
        Opcode.XOR, Opcode.MAXIMUM, Opcode.MINIMUM, Opcode.MULTIPLY, Opcode.NEGATE, Opcode.POPCNT,
        Opcode.POWER, Opcode.REAL, Opcode.REDUCE_PRECISION, Opcode.REMAINDER,
        Opcode.ROUND_NEAREST_AFZ, Opcode.RSQRT, Opcode.SELECT, Opcode.SHIFT_LEFT,
        Opcode.SHIFT_RIGHT_ARITHMETIC, Opcode.SHIFT_RIGHT_LOGICAL, Opcode.SIGN, Opcode.SINE,
        Opcode.SQRT, Opcode.SUBTRACT, Opcode.TANH, Opcode.CBRT, Opcode.LOGISTIC,
        Opcode.ROUND_NEAREST_EVEN, Opcode.STOCHASTIC_CONVERT, Opcode.TAN,
    }
)  # fmt: skip

# The ops whose layouts a layout-collection config sets (as found in every real layout file).
LAYOUT_CONFIGURABLE = frozenset({Opcode.CONVOLUTION, Opcode.DOT, Opcode.RESHAPE})


def is_layout_propagating(opcode: np.ndarray) -> np.ndarray:
    """bool, the shape of ``opcode`` (integer ids): which ops are in :data:`LAYOUT_PROPAGATING`."""
    return np.isin(opcode, np.fromiter(LAYOUT_PROPAGATING, dtype=np.int64))


def opcode_name(opcode: int) -> str:
    """The HLO op name of a ``node_opcode`` id, e.g. ``dot`` for 34; ``unknown`` for an id the numbering does not name
    (0, the retired 97 and 101, or one beyond it)."""
    try:
        return Opcode(opcode).name.lower().replace("_", "-")
    except ValueError:
        return "unknown"
