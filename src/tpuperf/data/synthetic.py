"""Synthetic TpuGraphs: the pipeline's embedded default data, written in the exact real format.

Real data needs Kaggle credentials, so ``tpuperf synth`` writes a dataset with the real layout
(``npz/tile/xla/{split}/``, ``npz/layout/{xla,nlp}/{random,default}/{split}/``,
``sample_submission.csv``) whose runtimes come from a hidden, documented cost model. The cost
model reads nothing but the arrays written to each file and the operand order of the edges (which
a real file does not hold either), so a model that sees the whole file can learn most of it, while
one that sees only the configuration features cannot: the same configuration values cost
differently depending on the shapes and wiring of the graph.

Graphs
    Nodes are HLO-like ops in topological order (``edge_index`` row ``[u, v]``: u consumes v,
    v < u). Files list the rows sorted by (u, v) like the real ones, so they do not hold HLO
    operand order; the cost model reads it (a binary op's first operand passes its layout on),
    and :func:`operand_edge_index` recovers it for a file by rebuilding the graph from the seed.
    Each node has an output shape (rank 0-4), an element type and a compiler-default layout
    (minor-to-major). Sources are parameters and constants;
    ops are elementwise unary/binary, broadcast, reduce, transpose, dot, convolution, reshape,
    and a tuple root in layout graphs. Opcode ids are the real dataset's numbering
    (:mod:`tpuperf.data.opcodes`). Node feature columns follow the real groups:
    0 is_root; 2-20 element type one-hot; 21-26 dims, 27 sum, 28 product; 29 tuple size;
    30 parameter number; 31-36 ``dimensions`` (reduced dim, transpose permutation, broadcast
    mapping); 37-42 / 43-48 convolution window size / stride; 94 lhs contracting or input
    feature dim, 97 rhs contracting or kernel input-feature dim, 98 kernel output-feature dim,
    107-108 group counts; 134-139 default layout minor-to-major. Other columns stay 0. Where
    the files still differ from the real ones (e.g. the real ones hold no dot dims in 94-98 and a
    dot's config rows list only its two minor-most dims) is tested in
    ``tests/test_synthetic_vs_real.py``.

Layout cost model (``layout_runtime``; ns, noise-free)
    Every dot, convolution and reshape listed in ``node_config_ids`` is configurable: its
    config row picks the minor-to-major layout of its output (cols 0-5), of the input it
    reads (6-11) and of its kernel operand (12-17). A group of -1 means the compiler default:
    the node's own default layout for the output, the operand's default layout for inputs.
    Layouts propagate: an elementwise op's output has its first operand's layout, so one
    configurable node's choice sets the layout of the whole elementwise chain below it;
    every other op produces its default layout. Costs, summed over nodes:

    - launch: ``OP_LAUNCH_NS`` per non-source op;
    - memory: elementwise ops move (operands + 1) x bytes x pad / ``HBM_BYTES_PER_NS``, where
      pad = ceil(minor/128)*128/minor x ceil(second-minor/8)*8/second-minor is the TPU tile
      padding of the tensor under its layout (a small dim made minor wastes lanes);
    - copies: a consumer that expects a layout different from the one it receives pays a
      transpose, launch + bytes x (pad_from + pad_to) / HBM: a configurable node's input or
      kernel layout vs its operand's layout, a binary op's second operand vs its first, the
      root vs each output's default layout, a transpose vs the layout that makes it a bitcast;
    - compute: dot/convolution flops / ``MXU_FLOPS_PER_NS``, x ``NONMINOR_CONTRACTION`` unless
      the input's contracting/feature dim is minor, x ``KERNEL_FEATURE_FAR`` unless the
      kernel's input-feature dim is one of its two minor-most dims (the preferred minor dim
      depends on the op's shape, visible only in node features);
    - reduce: bytes x pad / HBM x ``STRIDED_REDUCE`` unless the reduced dim is minor;
    - reshape: a bitcast (``BITCAST_FRACTION`` of a copy) when its input and output layouts
      are both row-major (last dim minor), a full copy otherwise.

    ``random`` collections draw each configurable node's row as the default (-1, with a
    per-graph probability) or independent random permutations; ``default`` collections start
    from the compiler default (config 0 is the default itself) and change 1 + Poisson(
    ``DEFAULT_SEARCH_MUTATIONS``) layout variables per config, written as explicit values (a
    few untouched rows left -1): most configs then differ by well under 1%, so ranking them is
    harder and measurement noise matters more, as in the real default collections.

Tile cost model (``tile_runtime``; ns, noise-free)
    A tile graph is one fused kernel. Config cols 0-7 tile the kernel's main input (its
    largest parameter), 8-15 the output (root), each dims 0-5 + sum + product; 16-23 stay 0.
    The cost model works on element tiles per logical dim; files hold them in the real files'
    convention (dims major to minor, the two minor-most in (8, 128) units, a tile below one
    unit as a fraction: :mod:`tpuperf.data.tile_features`), which decodes back exactly.
    Candidates are what an autotuner would try: per dim, the dim itself or a power of two
    from dim/64 (at least 32 on the minor dim, 2 on the second-minor), at most ``MAX_TILES``
    tiles. runtime = launch + (compute + read + overhead) x spill, with

    - compute = the kernel's work (the elementwise memory traffic and dot/conv flops above)
      x padding waste prod(ceil(d/t)*t/d) over the output dims x (8, 128) padding of one
      output tile under the root's layout;
    - read = main-input bytes / HBM x its own waste and tile padding;
    - overhead = ``TILE_STEP_NS`` x (output tiles + input tiles);
    - spill = 1 + ``SPILL_SLOPE`` x log2(working set / ``VMEM_BYTES``) when the working set
      (every op's bytes and the main input's bytes scaled down to one tile) overflows on-chip
      memory, else 1.

    Large tiles save per-tile overhead until they overflow VMEM, a threshold set by the
    graph's total bytes; padding depends on the real dims. ``config_runtime_normalizers``
    hold the (noisy) runtime of a heuristic default tile, one (8, 128) vreg.

Measurement noise: runtimes are multiplied by lognormal noise (``TILE_NOISE_SIGMA`` of a few
%, ``LAYOUT_NOISE_SIGMA`` well under 1%, since layout configs differ by less) and rounded to
int64 ns; test files hold zero runtimes (and tile normalisers of 1), like the real ones.
Files are deterministic per seed (fixed zip timestamps): same seed, same bytes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from tpuperf.atomic import replaced_dir, write_atomic
from tpuperf.collection import COLLECTIONS, SPLITS, Collection, locate
from tpuperf.data.npz import (
    COL_DIM_PROD,
    COL_DIM_SUM,
    COL_DIMS,
    COL_ELEMENT_TYPE,
    COL_IS_ROOT,
    COL_LAYOUT,
    ELEMENT_BYTES,
    ELEMENT_TYPES,
    MAX_RANK,
)
from tpuperf.data.opcodes import LAYOUT_CONFIGURABLE, Opcode
from tpuperf.data.tile_features import LANES, SUBLANES, element_tiles, file_bounds, tile_padding

# ---- cost-model constants (documented in the module docstring) ------------------------------
HBM_BYTES_PER_NS = 1200.0
MXU_FLOPS_PER_NS = 1.0e5
OP_LAUNCH_NS = 150.0
NONMINOR_CONTRACTION = 2.0
KERNEL_FEATURE_FAR = 1.5
STRIDED_REDUCE = 1.6
BITCAST_FRACTION = 0.1
TILE_STEP_NS = 100.0
MAX_TILES = 256  # autotuner candidates split a tensor into at most this many tiles
MINOR_TILE_FLOORS = (32, 2)  # smallest tile an autotuner tries on the minor, second-minor dim
VMEM_BYTES = 2 << 20
SPILL_SLOPE = 3.0
TILE_NOISE_SIGMA = 0.02
LAYOUT_NOISE_SIGMA = 0.002
DEFAULT_SEARCH_MUTATIONS = 3.0  # mean extra layout variables a default-search config changes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
ZIP_LEVEL = 1  # deflate level: 6x faster than the default 6, files about 2x larger


Op = Opcode  # the real TpuGraphs ids, so that pruning and models read synthetic and real files alike

SOURCES = {Op.PARAMETER, Op.CONSTANT}
UNARY = (Op.CONVERT, Op.EXPONENTIAL, Op.TANH, Op.NEGATE)
BINARY = (Op.ADD, Op.MULTIPLY, Op.SUBTRACT, Op.DIVIDE, Op.MAXIMUM)
ELEMENTWISE = set(UNARY) | set(BINARY)
CONTRACTIONS = {Op.DOT, Op.CONVOLUTION}
CONFIGURABLE = LAYOUT_CONFIGURABLE

# ---- node feature columns (the TpuGraphs dataset README's groups; shared ones: tpuperf.data.npz) ----------
ETYPES = ("pred", "s32", "bf16", "f32", "tuple")  # the element types the generator writes
ETYPE_COL = {t: COL_ELEMENT_TYPE + ELEMENT_TYPES.index(t) for t in ETYPES}  # the real files' columns
ETYPE_BYTES = {t: int(ELEMENT_BYTES[ELEMENT_TYPES.index(t)]) for t in ETYPES}
COL_TUPLE_SIZE, COL_PARAM_NUMBER = 29, 30
COL_DIMENSIONS = 31
COL_WINDOW_SIZE, COL_WINDOW_STRIDE = 37, 43
COL_IN_FEATURE, COL_KER_IN_FEATURE, COL_KER_OUT_FEATURE = 94, 97, 98
COL_FEATURE_GROUPS, COL_BATCH_GROUPS = 107, 108

# Tile config columns: kernel (main input) tile 0-5 + sum + product, output tile 8-13 + 14 + 15.
TILE_KERNEL, TILE_OUTPUT = 0, 8

# Dim pools per source: vision-like mixes for xla, transformer-like sizes for nlp.
DIM_POOLS = {
    "xla": (1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56, 64, 96, 112, 128, 192, 224, 256, 384, 512, 768, 1000, 1024),
    "nlp": (1, 2, 4, 8, 12, 16, 32, 64, 128, 197, 256, 384, 512, 768, 1024, 3072),
}
MAX_VOLUME = {"tile": 1 << 21, "layout": 1 << 23}


# =============================================================================================
# Presets
# =============================================================================================
@dataclass(frozen=True)
class LayoutSize:
    """Size ranges (inclusive) of the graphs of one layout source."""

    nodes: tuple[int, int]
    configurable: tuple[int, int]
    configs: tuple[int, int]


@dataclass(frozen=True)
class Preset:
    """How many graphs of which sizes one generated dataset holds (ranges inclusive).

    Tile config counts are upper bounds: a kernel whose shapes allow fewer distinct tilings
    gets fewer (the real data has such kernels too)."""

    tile_graphs: tuple[int, int, int]  # train, valid, test
    tile_nodes: tuple[int, int]
    tile_configs: tuple[int, int]
    layout_graphs: dict[str, tuple[int, int, int]]  # per source (xla, nlp), per layout collection: train, valid, test
    layout: dict[str, LayoutSize] = field(default_factory=dict)  # per source: xla, nlp
    layout_test_configs: int | None = None  # test files hold (and the sample lists) this many; None: drawn
    extra_config_test_file: bool = False  # one layout test file holds one config more than listed


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        tile_graphs=(6, 3, 3),
        tile_nodes=(10, 40),
        tile_configs=(10, 40),
        layout_graphs={s: (6, 3, 3) for s in ("xla", "nlp")},
        layout={s: LayoutSize((10, 40), (3, 8), (20, 60)) for s in ("xla", "nlp")},
    ),
    "small": Preset(
        tile_graphs=(150, 40, 40),
        tile_nodes=(10, 80),
        tile_configs=(50, 300),
        layout_graphs={s: (24, 8, 8) for s in ("xla", "nlp")},
        layout={s: LayoutSize((80, 600), (10, 40), (200, 1000)) for s in ("xla", "nlp")},
        # real test files hold 1,000 configs; 300 keeps the default CPU pipeline within 15 minutes
        # (scoring test configs with four models dominated it) while keeping the +1 quirk file
        layout_test_configs=300,
        extra_config_test_file=True,
    ),
    # the real dataset's graph counts per layout collection (TpuGraphs Table 1: xla 69/7/8, nlp
    # 200/20/17 train/valid/test) at moderate graph sizes (real: xla ~14k, nlp ~5.7k nodes), and
    # enough tile kernels that a valid score measures generalisation to unseen kernels
    "medium": Preset(
        tile_graphs=(600, 150, 150),
        tile_nodes=(10, 80),
        tile_configs=(50, 300),
        layout_graphs={"xla": (69, 7, 8), "nlp": (200, 20, 17)},
        layout={
            "xla": LayoutSize((200, 1200), (20, 80), (300, 1500)),
            "nlp": LayoutSize((150, 800), (15, 60), (300, 1500)),
        },
        layout_test_configs=1000,
        extra_config_test_file=True,
    ),
    "real": Preset(
        tile_graphs=(20, 5, 5),
        tile_nodes=(5, 80),
        tile_configs=(500, 3000),
        layout_graphs={s: (2, 1, 1) for s in ("xla", "nlp")},
        layout={
            "xla": LayoutSize((8000, 20000), (50, 300), (2000, 10000)),
            "nlp": LayoutSize((5000, 40000), (100, 500), (10000, 30000)),
        },
        layout_test_configs=1000,
        extra_config_test_file=True,
    ),
}


# =============================================================================================
# Layout permutations and padding
# =============================================================================================
@cache
def _perms(rank: int) -> np.ndarray:
    """All minor-to-major orders of a rank-r tensor, (r!, r) int64, lexicographic."""
    return (
        np.array(list(itertools.permutations(range(rank))), np.int64).reshape(-1, rank)
        if rank
        else np.zeros((1, 0), np.int64)
    )


@cache
def _perm_codes(rank: int) -> np.ndarray:
    """Lookup from a base-r code of a minor-to-major list to its index in ``_perms`` (-1 = invalid)."""
    table = np.full(max(rank, 1) ** rank, -1, np.int64)
    perms = _perms(rank)
    table[(perms * rank ** np.arange(rank)).sum(1)] = np.arange(len(perms))
    return table


def _perm_index(perm: tuple[int, ...]) -> int:
    return int(_perm_codes(len(perm))[sum(p * len(perm) ** i for i, p in enumerate(perm))])


def _descending(rank: int) -> tuple[int, ...]:
    """XLA's default layout: the last dim is minor."""
    return tuple(range(rank - 1, -1, -1))


def _pad_factors(shape: tuple[int, ...]) -> np.ndarray:
    """TPU (8, 128) tile padding of a tensor under each of its layouts, indexed like ``_perms``."""
    rank = len(shape)
    if rank == 0:
        return np.ones(1)
    dims = np.asarray(shape, np.float64)
    perms = _perms(rank)
    minor = dims[perms[:, 0]]
    pad = np.ceil(minor / LANES) * LANES / minor
    if rank > 1:
        second = dims[perms[:, 1]]
        pad *= np.ceil(second / SUBLANES) * SUBLANES / second
    return pad


# =============================================================================================
# Graph construction
# =============================================================================================
@dataclass
class _Node:
    opcode: int
    shape: tuple[int, ...]
    etype: str
    operands: list[int]
    layout: tuple[int, ...] = ()
    dimensions: tuple[int, ...] = ()  # cols 31-36
    contracting: tuple[int, int, int] | None = None  # cols 94, 97, 98
    window: tuple[int, int] | None = None  # (kernel size, stride) of a convolution
    param_number: int | None = None


NODES_PER_CONFIGURABLE = 4  # room for each configurable op's operands and consumers
MAX_OVERSHOOT = 3  # the last op may add helper nodes (parameters, broadcasts) and the root
PICK_WINDOW = 40  # ops take operands among the last this many nodes
RECENCY = tuple(0.9**age for age in range(PICK_WINDOW + 1))


class _Builder:
    """Grows a random HLO-like DAG in topological order, wiring ops mostly to recent nodes."""

    def __init__(self, rng: np.random.Generator, source: str, kind: str):
        self.rng = rng
        self.pool = DIM_POOLS[source]
        self.max_volume = MAX_VOLUME[kind]
        self.etype = "bf16" if source == "nlp" and rng.random() < 0.5 else "f32"
        self.nodes: list[_Node] = []
        self.unconsumed: set[int] = set()
        self.n_params = 0
        self.n_configurable = 0

    # -- basics ---------------------------------------------------------------------------
    def add(self, node: _Node) -> int:
        if not node.layout:
            node.layout = self._default_layout(node)
        for o in node.operands:
            self.unconsumed.discard(o)
        self.nodes.append(node)
        idx = len(self.nodes) - 1
        self.unconsumed.add(idx)
        if node.opcode in CONFIGURABLE:
            self.n_configurable += 1
        return idx

    def _default_layout(self, node: _Node) -> tuple[int, ...]:
        if node.opcode in ELEMENTWISE:
            return self.nodes[node.operands[0]].layout
        return _descending(len(node.shape))

    def dim(self) -> int:
        return self.pool[int(self.rng.integers(len(self.pool)))]

    def shape(self, rank: int) -> tuple[int, ...]:
        dims = [self.dim() for _ in range(rank)]
        while math.prod(dims) > self.max_volume:
            i = dims.index(max(dims))
            dims[i] = max(1, dims[i] // 4)
        return tuple(dims)

    def pick(self, ok) -> int | None:
        """A recent node passing ``ok``, favouring the newest and the not yet consumed."""
        n = len(self.nodes)
        cands, weights = [], []
        for i in range(max(0, n - PICK_WINDOW), n):
            node = self.nodes[i]
            if node.opcode != Op.TUPLE and ok(node):
                cands.append(i)
                weights.append(RECENCY[n - i] * (4.0 if i in self.unconsumed else 1.0))
        if not cands:
            return None
        cum = list(itertools.accumulate(weights))
        return cands[bisect.bisect_right(cum, self.rng.random() * cum[-1])]

    def parameter(self, shape: tuple[int, ...]) -> int:
        layout = _descending(len(shape))
        if len(shape) > 1 and self.rng.random() < 0.15:
            layout = tuple(int(x) for x in self.rng.permutation(len(shape)))
        node = _Node(Op.PARAMETER, shape, self.etype, [], layout, param_number=self.n_params)
        self.n_params += 1
        return self.add(node)

    def operand(self, ranks: tuple[int, ...]) -> int:
        """A recent node of one of ``ranks``, or a new parameter when none is at hand."""
        found = self.pick(lambda n: len(n.shape) in ranks and n.opcode != Op.CONSTANT)
        if found is None or self.rng.random() < 0.08:
            found = self.parameter(self.shape(int(self.rng.choice(ranks))))
        return found

    # -- plain ops ------------------------------------------------------------------------
    def unary(self) -> int:
        src = self.operand((1, 2, 3, 4))
        opcode = int(self.rng.choice(UNARY))
        etype = self.nodes[src].etype
        if opcode == Op.CONVERT:
            etype = "bf16" if etype == "f32" else "f32"
        return self.add(_Node(opcode, self.nodes[src].shape, etype, [src]))

    def broadcast_to(self, shape: tuple[int, ...], etype: str) -> int:
        if self.rng.random() < 0.5:
            src = self.add(_Node(Op.CONSTANT, (), etype, []))
            dims: tuple[int, ...] = ()
        else:
            d = int(self.rng.integers(len(shape)))
            src = self.parameter((shape[d],))
            dims = (d,)
        return self.add(_Node(Op.BROADCAST, shape, etype, [src], dimensions=dims))

    def binary(self) -> int:
        a = self.operand((1, 2, 3, 4))
        shape, etype = self.nodes[a].shape, self.nodes[a].etype
        b = self.pick(lambda n: n.shape == shape) if self.rng.random() < 0.7 else None
        if b is None or b == a:
            b = self.broadcast_to(shape, etype)
        return self.add(_Node(int(self.rng.choice(BINARY)), shape, etype, [a, b]))

    def reduce(self) -> int:
        src = self.operand((2, 3, 4))
        shape = self.nodes[src].shape
        d = int(self.rng.integers(len(shape)))
        out = shape[:d] + shape[d + 1 :]
        return self.add(_Node(Op.REDUCE, out, self.nodes[src].etype, [src], dimensions=(d,)))

    def transpose(self) -> int:
        src = self.operand((2, 3, 4))
        shape = self.nodes[src].shape
        perm = tuple(range(len(shape)))
        while perm == tuple(range(len(shape))):
            perm = tuple(int(x) for x in self.rng.permutation(len(shape)))
        out = tuple(shape[p] for p in perm)
        return self.add(_Node(Op.TRANSPOSE, out, self.nodes[src].etype, [src], dimensions=perm))

    def plain_op(self) -> int:
        r = self.rng.random()
        if r < 0.32:
            return self.unary()
        if r < 0.72:
            return self.binary()
        if r < 0.84:
            return self.reduce()
        if r < 0.92:
            return self.transpose()
        return self.broadcast_to(self.shape(int(self.rng.integers(2, 4))), self.etype)

    # -- ops with a layout choice -----------------------------------------------------------
    def dot(self) -> int:
        lhs = self.operand((2, 3))
        shape = self.nodes[lhs].shape
        cd = int(self.rng.integers(len(shape)))
        k = shape[cd]
        rest = shape[:cd] + shape[cd + 1 :]
        n = self.dim()
        while n > 1 and np.prod(rest, dtype=np.int64) * n > self.max_volume:
            n //= 2
        rcd = int(self.rng.integers(2))
        rhs = self.parameter((k, n) if rcd == 0 else (n, k))
        node = _Node(Op.DOT, rest + (n,), self.nodes[lhs].etype, [lhs, rhs], contracting=(cd, rcd, 1 - rcd))
        return self.add(node)

    def convolution(self) -> int:
        feature = int(self.rng.choice((1, 3)))  # NCHW or NHWC
        src = self.pick(lambda n: len(n.shape) == 4 and n.opcode != Op.CONSTANT)
        if src is None:
            dims = [int(self.rng.choice((1, 2, 4, 8, 16)))] + [int(self.rng.choice((7, 14, 28, 56, 112)))] * 3
            dims[feature] = self.dim()
            src = self.parameter(tuple(dims))
        shape = self.nodes[src].shape
        ksize, stride = int(self.rng.choice((1, 3, 5))), int(self.rng.choice((1, 1, 2)))
        out = [shape[0]] + [-(-d // stride) for d in shape[1:]]
        out[feature] = self.dim()
        while out[feature] > 1 and np.prod(out, dtype=np.int64) > self.max_volume:
            out[feature] //= 2
        kernel = self.parameter((ksize, ksize, shape[feature], out[feature]))
        node = _Node(
            Op.CONVOLUTION,
            tuple(out),
            self.nodes[src].etype,
            [src, kernel],
            contracting=(feature, 2, 3),
            window=(ksize, stride),
        )
        return self.add(node)

    def reshape(self) -> int:
        src = self.operand((2, 3, 4))
        shape = list(self.nodes[src].shape)
        splittable = [i for i, d in enumerate(shape) if d > 2 and d % 2 == 0]
        if len(shape) < 4 and splittable and self.rng.random() < 0.5:
            i = int(self.rng.choice(splittable))
            a = 2 ** int(self.rng.integers(1, int(np.log2(shape[i] & -shape[i])) + 1))
            out = shape[:i] + [a, shape[i] // a] + shape[i + 1 :]
        else:
            i = int(self.rng.integers(len(shape) - 1))
            out = shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2 :]
        return self.add(_Node(Op.RESHAPE, tuple(out), self.nodes[src].etype, [src]))

    def configurable_op(self, source: str) -> int:
        r = self.rng.random()
        conv_share = 0.35 if source == "xla" else 0.1
        if r < conv_share:
            return self.convolution()
        if r < 0.7:
            return self.dot()
        return self.reshape()

    # -- roots ----------------------------------------------------------------------------
    def tuple_root(self) -> int:
        outs = sorted(i for i in self.unconsumed if self.nodes[i].opcode not in SOURCES)
        return self.add(_Node(Op.TUPLE, (), "tuple", outs))


def _build_graph(rng: np.random.Generator, source: str, kind: str, n_nodes: int, n_configurable: int) -> list[_Node]:
    """``n_nodes`` to about ``n_nodes + MAX_OVERSHOOT`` nodes, ``n_configurable`` of them dot /
    convolution / reshape (keep ``n_nodes`` >= ``NODES_PER_CONFIGURABLE`` x ``n_configurable``).

    Tile graphs (``n_configurable`` 0) end in an elementwise root; layout graphs in a tuple
    of every unconsumed op. Configurable ops are spread evenly through the program."""
    b = _Builder(rng, source, kind)
    for _ in range(int(rng.integers(1, 3))):
        b.parameter(b.shape(int(rng.integers(2, 5))))
    while len(b.nodes) < n_nodes - 1:
        left = n_nodes - 1 - len(b.nodes)
        need = n_configurable - b.n_configurable
        if need > 0 and rng.random() < min(1.0, 3.0 * need / left):
            b.configurable_op(source)
        elif kind == "tile" and rng.random() < 0.05:
            b.configurable_op(source)  # fused kernels may hold a dot or convolution too
        else:
            b.plain_op()
    while b.n_configurable < n_configurable:  # rare: the budget ran out first
        b.configurable_op(source)
    if kind == "layout":
        b.tuple_root()
    else:
        recent = [
            i for i in range(max(0, len(b.nodes) - PICK_WINDOW), len(b.nodes)) if b.nodes[i].opcode not in SOURCES
        ]
        big = max(recent, key=lambda i: (np.prod(b.nodes[i].shape), i)) if recent else None
        src = big if big is not None and b.nodes[big].shape else b.operand((2, 3))
        b.add(_Node(Op.CONVERT, b.nodes[src].shape, b.nodes[src].etype, [src]))
    return b.nodes


def _node_arrays(nodes: list[_Node]) -> dict[str, np.ndarray]:
    """node_feat (n, 140) float32, node_opcode uint8, edge_index (m, 2) int64 in operand order
    (the cost model's input; a file holds :func:`_file_edges` of it)."""
    n = len(nodes)
    feat = np.zeros((n, 140), np.float32)
    edges = []
    for i, node in enumerate(nodes):
        row = feat[i]
        row[ETYPE_COL[node.etype]] = 1
        rank = len(node.shape)
        row[COL_DIMS : COL_DIMS + rank] = node.shape
        row[COL_DIM_SUM] = sum(node.shape)
        row[COL_DIM_PROD] = float(np.prod(node.shape))  # 1 for a scalar or tuple (no dims), as in the real files
        row[COL_LAYOUT : COL_LAYOUT + rank] = node.layout
        row[COL_DIMENSIONS : COL_DIMENSIONS + len(node.dimensions)] = node.dimensions
        if node.opcode == Op.TUPLE:
            row[COL_TUPLE_SIZE] = len(node.operands)
        if node.param_number is not None:
            row[COL_PARAM_NUMBER] = node.param_number
        if node.contracting is not None:
            row[[COL_IN_FEATURE, COL_KER_IN_FEATURE, COL_KER_OUT_FEATURE]] = node.contracting
        if node.window is not None:
            row[COL_WINDOW_SIZE : COL_WINDOW_SIZE + 2] = node.window[0]
            row[COL_WINDOW_STRIDE : COL_WINDOW_STRIDE + 2] = node.window[1]
            row[COL_FEATURE_GROUPS] = row[COL_BATCH_GROUPS] = 1
        edges.extend((i, o) for o in node.operands)
    feat[n - 1, COL_IS_ROOT] = 1
    return {
        "node_feat": feat,
        "node_opcode": np.array([nd.opcode for nd in nodes], np.uint8),
        "edge_index": np.array(edges, np.int64).reshape(-1, 2),
    }


def _file_edges(operand_edges: np.ndarray, *, layout: bool) -> np.ndarray:
    """The rows a file holds: sorted by (consumer, producer) id like every real file, and, like
    the real layout files (not the tile ones), stored column-major (Fortran order)."""
    rows = operand_edges[np.lexsort((operand_edges[:, 1], operand_edges[:, 0]))]
    return np.asfortranarray(rows) if layout else np.ascontiguousarray(rows)


# =============================================================================================
# Reading a graph back from its arrays (what the file holds, plus the edges' operand order)
# =============================================================================================
@dataclass
class _Parsed:
    opcode: np.ndarray
    shapes: list[tuple[int, ...]]
    nbytes: np.ndarray  # float64 (n,)
    layouts: list[tuple[int, ...]]
    operands: list[list[int]]
    feat: np.ndarray


def _parse(node_feat: np.ndarray, node_opcode: np.ndarray, operand_edges: np.ndarray) -> _Parsed:
    """The graph the cost model reads; ``operand_edges`` (m, 2) rows ``[u, v]`` list each
    consumer's operands in HLO operand order (a file's rows do not: :func:`operand_edge_index`)."""
    n = len(node_feat)
    dims = node_feat[:, COL_DIMS : COL_DIMS + MAX_RANK].astype(np.int64)
    ranks = (dims > 0).sum(1)
    shapes = [tuple(int(x) for x in dims[i, : ranks[i]]) for i in range(n)]
    layout_cols = node_feat[:, COL_LAYOUT : COL_LAYOUT + MAX_RANK].astype(np.int64)
    layouts = [tuple(int(x) for x in layout_cols[i, : ranks[i]]) for i in range(n)]
    etype_cols = list(ETYPE_COL.values())
    elem_bytes = np.array(list(ETYPE_BYTES.values()), np.float64)[node_feat[:, etype_cols].argmax(1)]
    volume = np.where(ranks > 0, np.prod(np.where(dims > 0, dims, 1), axis=1), 1).astype(np.float64)
    order = np.argsort(operand_edges[:, 0], kind="stable")
    operands: list[list[int]] = [[] for _ in range(n)]
    for u, v in operand_edges[order].tolist():
        operands[u].append(v)
    return _Parsed(node_opcode.astype(np.int64), shapes, volume * elem_bytes, layouts, operands, node_feat)


def _flops(g: _Parsed, v: int) -> float:
    """Dot / convolution multiply-adds x 2: output volume x (kernel volume / output features)."""
    kernel = g.operands[v][1]
    out_feature = g.shapes[kernel][int(g.feat[v, COL_KER_OUT_FEATURE])]
    out_volume = float(np.prod(g.shapes[v]))
    return 2.0 * out_volume * float(np.prod(g.shapes[kernel])) / out_feature


# =============================================================================================
# Layout cost model
# =============================================================================================
class _Energy:
    """A sum of factor tables over layout variables: const + sum_k table_k[X[vars_k]].

    A source is a variable id (>= 0) or a fixed layout ``-1 - perm_index`` (< 0)."""

    def __init__(self) -> None:
        self.const = 0.0
        self.factors: dict[tuple[int, ...], np.ndarray] = {}

    def add(self, sources: list[int], table: np.ndarray) -> None:
        table = np.asarray(table, np.float64)
        for axis in reversed(range(len(sources))):
            if sources[axis] < 0:
                table = np.take(table, -1 - sources[axis], axis=axis)
        variables = [s for s in sources if s >= 0]
        while len(set(variables)) < len(variables):  # same variable twice: keep the diagonal
            i = next(k for k, s in enumerate(variables) if variables.index(s) != k)
            j = variables.index(variables[i])
            table = np.diagonal(table, axis1=j, axis2=i)
            variables = [s for k, s in enumerate(variables) if k not in (i, j)] + [variables[i]]
        if not variables:
            self.const += float(table)
            return
        order = np.argsort(variables)
        key = tuple(variables[k] for k in order)
        table = np.transpose(table, order)
        self.factors[key] = self.factors[key] + table if key in self.factors else table

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        """Energy of every config; ``values`` is (variables, configs)."""
        total = np.full(values.shape[1], self.const)
        for key, table in self.factors.items():
            total += table[tuple(values[k] for k in key)]
        return total


def _copy_table(nbytes: float, pad: np.ndarray) -> np.ndarray:
    """Transpose cost from layout a (rows) to layout b (columns); zero when they agree."""
    table = OP_LAUNCH_NS + nbytes * (pad[:, None] + pad[None, :]) / HBM_BYTES_PER_NS
    np.fill_diagonal(table, 0.0)
    return table


def _fixed(layout: tuple[int, ...]) -> int:
    return -1 - _perm_index(layout)


def _layout_energy(g: _Parsed, config_ids: np.ndarray) -> tuple[_Energy, list[tuple[int, int, int]]]:
    """The cost of every config as an energy over layout variables.

    Variables of configurable node j: 3j output, 3j+1 input (operand 0), 3j+2 kernel
    (operand 1; rank 0 when absent). Returns the energy and, per variable, (rank, default
    perm index, feature column offset)."""
    slot = {int(v): j for j, v in enumerate(config_ids)}
    variables: list[tuple[int, int, int]] = []
    for v in config_ids.tolist():
        ops = g.operands[v]
        for group, tensor in enumerate((v, ops[0] if ops else None, ops[1] if len(ops) > 1 else None)):
            layout = g.layouts[tensor] if tensor is not None else ()
            variables.append((len(layout), _perm_index(layout), 6 * group))

    energy = _Energy()
    src: list[int] = []
    pads = [_pad_factors(s) for s in g.shapes]
    for v in range(len(g.shapes)):
        op, ops, nbytes = int(g.opcode[v]), g.operands[v], g.nbytes[v]
        if v in slot:
            src.append(3 * slot[v])
        elif op in ELEMENTWISE and ops:
            src.append(src[ops[0]])
        else:
            src.append(_fixed(g.layouts[v]))
        if op in SOURCES:
            continue
        energy.const += OP_LAUNCH_NS
        if op in ELEMENTWISE:
            energy.add([src[v]], (1 + len(ops)) * nbytes * pads[v] / HBM_BYTES_PER_NS)
            if len(ops) > 1:
                energy.add([src[ops[1]], src[ops[0]]], _copy_table(g.nbytes[ops[1]], pads[ops[1]]))
        elif op == Op.BROADCAST:
            energy.const += nbytes * pads[v][_perm_index(g.layouts[v])] / HBM_BYTES_PER_NS
        elif op == Op.REDUCE:
            a = ops[0]
            strided = np.where(_perms(len(g.shapes[a]))[:, 0] == int(g.feat[v, COL_DIMENSIONS]), 1.0, STRIDED_REDUCE)
            energy.add([src[a]], g.nbytes[a] * pads[a] * strided / HBM_BYTES_PER_NS)
        elif op == Op.TRANSPOSE:
            a = ops[0]
            perm = [int(x) for x in g.feat[v, COL_DIMENSIONS : COL_DIMENSIONS + len(g.shapes[v])]]
            bitcast = _perm_index(tuple(reversed(perm)))
            cost = 2 * g.nbytes[a] * pads[a] / HBM_BYTES_PER_NS
            cost[bitcast] *= BITCAST_FRACTION
            energy.add([src[a]], cost)
        elif op == Op.TUPLE:
            for a in ops:
                energy.add([src[a]], _copy_table(g.nbytes[a], pads[a])[:, _perm_index(g.layouts[a])])
        elif op in CONFIGURABLE:
            out_var, in_var, ker_var = (3 * slot[v] + k for k in range(3)) if v in slot else (src[v], None, None)
            _configurable_terms(energy, g, v, src, pads, out_var, in_var, ker_var)
    return energy, variables


def _configurable_terms(
    energy: _Energy,
    g: _Parsed,
    v: int,
    src: list[int],
    pads: list[np.ndarray],
    out_var: int,
    in_var: int | None,
    ker_var: int | None,
) -> None:
    """Dot / convolution / reshape costs; a non-configurable one keeps its operands' layouts."""
    ops = g.operands[v]
    in_var = src[ops[0]] if in_var is None else in_var
    a = ops[0]
    energy.add([src[a], in_var], _copy_table(g.nbytes[a], pads[a]))
    energy.add([in_var], g.nbytes[a] * pads[a] / HBM_BYTES_PER_NS)
    energy.add([out_var], g.nbytes[v] * pads[v] / HBM_BYTES_PER_NS)
    if int(g.opcode[v]) == Op.RESHAPE:
        copy = np.add.outer(pads[a] * g.nbytes[a], pads[v] * g.nbytes[v]) / HBM_BYTES_PER_NS
        copy[_perm_index(_descending(len(g.shapes[a]))), _perm_index(_descending(len(g.shapes[v])))] *= BITCAST_FRACTION
        energy.add([in_var, out_var], copy)
        return
    k = ops[1]
    ker_var = src[k] if ker_var is None else ker_var
    energy.add([src[k], ker_var], _copy_table(g.nbytes[k], pads[k]))
    energy.add([ker_var], g.nbytes[k] * pads[k] / HBM_BYTES_PER_NS)
    in_eff = np.where(_perms(len(g.shapes[a]))[:, 0] == int(g.feat[v, COL_IN_FEATURE]), 1.0, NONMINOR_CONTRACTION)
    near = (_perms(len(g.shapes[k]))[:, :2] == int(g.feat[v, COL_KER_IN_FEATURE])).any(1)
    ker_eff = np.where(near, 1.0, KERNEL_FEATURE_FAR)
    energy.add([in_var, ker_var], _flops(g, v) / MXU_FLOPS_PER_NS * np.outer(in_eff, ker_eff))


def _decode_configs(node_config_feat: np.ndarray, variables: list[tuple[int, int, int]]) -> np.ndarray:
    """(3 nc, c) perm indices of every layout variable, one contiguous row per variable;
    a group of -1 means the default."""
    c = len(node_config_feat)
    values = np.empty((len(variables), c), np.int16)
    for k, (rank, default, col) in enumerate(variables):
        if rank <= 1:
            values[k] = 0
            continue
        group = node_config_feat[:, k // 3, col : col + rank].astype(np.int64)
        is_default = (group == -1).all(1)
        code = (np.clip(group, 0, rank - 1) * rank ** np.arange(rank)).sum(1)
        idx = _perm_codes(rank)[code]
        bad = ~is_default & ((idx < 0) | (group < 0).any(1))
        if bad.any():
            raise ValueError(
                f"node_config_feat: config {int(np.flatnonzero(bad)[0])}, node {k // 3}: not a layout of rank {rank}"
            )
        values[k] = np.where(is_default, default, idx)
    return values


def layout_runtime(
    node_feat: np.ndarray,
    node_opcode: np.ndarray,
    operand_edges: np.ndarray,
    node_config_ids: np.ndarray,
    node_config_feat: np.ndarray,
) -> np.ndarray:
    """Noise-free runtime (c,) float64 ns of every layout config: the oracle of a layout file.

    ``operand_edges``: the graph's (m, 2) edge rows with each consumer's operands in HLO operand
    order; a file's id-sorted ``edge_index`` is not that, :func:`operand_edge_index` gives it.
    Raises ValueError for a config row that is not a layout of its tensor's rank."""
    g = _parse(node_feat, node_opcode, operand_edges)
    energy, variables = _layout_energy(g, np.asarray(node_config_ids))
    return energy.evaluate(_decode_configs(node_config_feat, variables))


# =============================================================================================
# Tile cost model
# =============================================================================================
def _tile_parts(g: _Parsed) -> tuple[int, int]:
    """(output node, main input node): the root and the kernel's largest parameter."""
    root = int(np.flatnonzero(g.feat[:, COL_IS_ROOT] > 0)[-1])
    params = [v for v in range(len(g.shapes)) if g.opcode[v] == Op.PARAMETER and g.shapes[v]]
    main = max(params, key=lambda v: (g.nbytes[v], -v)) if params else root
    return root, main


def tile_runtime(
    node_feat: np.ndarray, node_opcode: np.ndarray, operand_edges: np.ndarray, config_feat: np.ndarray
) -> np.ndarray:
    """Noise-free runtime (c,) float64 ns of every tile config: the oracle of a tile file.

    ``operand_edges`` as for :func:`layout_runtime` (a file's ``edge_index`` is id-sorted);
    ``config_feat`` (c, 24) as the file holds it, in the real files' bound convention (decoded
    to element tiles by :func:`tpuperf.data.tile_features.element_tiles`)."""
    g = _parse(node_feat, node_opcode, operand_edges)
    root, main = _tile_parts(g)
    ops = [v for v in range(len(g.shapes)) if g.opcode[v] not in SOURCES]
    work = sum((1 + len(g.operands[v])) * g.nbytes[v] / HBM_BYTES_PER_NS for v in ops)
    work += sum(_flops(g, v) / MXU_FLOPS_PER_NS for v in ops if g.opcode[v] in CONTRACTIONS)
    op_bytes = float(sum(g.nbytes[v] for v in ops))

    out_dims = np.asarray(g.shapes[root], np.float64)
    out_tiles = element_tiles(config_feat[:, TILE_OUTPUT : TILE_OUTPUT + len(out_dims)], out_dims, g.layouts[root])
    n_tiles, waste, lane = tile_padding(out_dims, out_tiles, g.layouts[root])
    in_dims = np.asarray(g.shapes[main], np.float64)
    in_tiles = element_tiles(config_feat[:, TILE_KERNEL : TILE_KERNEL + len(in_dims)], in_dims, g.layouts[main])
    n_in_tiles, in_waste, in_lane = tile_padding(in_dims, in_tiles, g.layouts[main])

    compute = work * waste * lane
    read = g.nbytes[main] / HBM_BYTES_PER_NS * in_waste * in_lane
    overhead = TILE_STEP_NS * (n_tiles + n_in_tiles)
    working_set = op_bytes * waste / n_tiles + g.nbytes[main] * in_waste / n_in_tiles
    spill = 1.0 + SPILL_SLOPE * np.log2(np.maximum(working_set / VMEM_BYTES, 1.0))
    return OP_LAUNCH_NS + (compute + read + overhead) * spill


def _tile_bounds(tiles: np.ndarray, shape: tuple[int, ...], layout: tuple[int, ...]) -> np.ndarray:
    """(c, 8) file tile bounds of element ``tiles`` (c, rank; logical dims) of a tensor of ``shape``
    and minor-to-major ``layout``: its dims 0-5 in the files' convention (major to minor, the two
    minor-most in (8, 128) units: :func:`tpuperf.data.tile_features.file_bounds`; 0 beyond the
    rank), sum, product."""
    tiles = file_bounds(tiles, np.asarray(shape), np.asarray(layout))
    out = np.zeros((len(tiles), 8), np.float32)
    out[:, : tiles.shape[1]] = tiles
    out[:, 6] = tiles.sum(1)
    out[:, 7] = tiles.prod(1)
    return out


def _tile_choices(dim: int, floor: int) -> np.ndarray:
    """Tile sizes an autotuner tries for one dim: the dim, and powers of two from
    max(dim / 64, floor) up to it (``floor`` keeps minor tiles from starving the lanes)."""
    low = max(dim / 64, min(dim, floor))
    powers = [2**k for k in range(int(np.log2(dim)) + 1)]
    return np.unique([p for p in powers if p >= low] + [dim])


def _sample_tiles(rng: np.random.Generator, dims: tuple[int, ...], layout: tuple[int, ...], n: int) -> np.ndarray:
    """Up to n tilings of a tensor into at most ``MAX_TILES`` tiles; the first is the
    whole tensor as one tile, so there is always at least one."""
    floors = [1] * len(dims)
    for rank_from_minor, floor in zip(layout, MINOR_TILE_FLOORS):
        floors[rank_from_minor] = floor
    tiles = np.stack([rng.choice(_tile_choices(d, f), size=n - 1) for d, f in zip(dims, floors)], axis=1)
    tiles = np.concatenate([np.asarray(dims, np.float64)[None, :], tiles])
    return tiles[np.prod(np.ceil(np.asarray(dims) / tiles), axis=1) <= MAX_TILES]


def _default_tile(dims: tuple[int, ...], layout: tuple[int, ...]) -> np.ndarray:
    """The heuristic default a compiler would pick: one (8, 128) vreg tile, clipped to the dims."""
    tile = np.ones(len(dims))
    if layout:
        tile[layout[0]] = min(dims[layout[0]], LANES)
    if len(layout) > 1:
        tile[layout[1]] = min(dims[layout[1]], SUBLANES)
    return tile[None, :]


def _noisy(rng: np.random.Generator, runtime: np.ndarray, sigma: float) -> np.ndarray:
    return np.maximum(np.rint(runtime * rng.lognormal(0.0, sigma, len(runtime))), 1).astype(np.int64)


def make_tile_graph(
    rng: np.random.Generator, n_nodes: int, n_configs: int, *, labelled: bool = True
) -> dict[str, np.ndarray]:
    """One ``tile:xla`` graph's arrays as a file holds them (key order, id-sorted edge rows).
    Distinct configs; fewer than ``n_configs`` when the kernel's shapes allow fewer.
    ``labelled=False`` gives a test file."""
    nodes = _build_graph(rng, "xla", "tile", n_nodes, 0)
    arrays = _node_arrays(nodes)
    g = _parse(arrays["node_feat"], arrays["node_opcode"], arrays["edge_index"])
    root, main = _tile_parts(g)
    out_t = _sample_tiles(rng, g.shapes[root], g.layouts[root], 8 * n_configs)
    in_t = _sample_tiles(rng, g.shapes[main], g.layouts[main], 8 * n_configs)
    out_t, in_t = out_t[: len(in_t)], in_t[: len(out_t)]
    config_feat = np.zeros((len(out_t), 24), np.float32)
    config_feat[:, TILE_KERNEL : TILE_KERNEL + 8] = _tile_bounds(in_t, g.shapes[main], g.layouts[main])
    config_feat[:, TILE_OUTPUT : TILE_OUTPUT + 8] = _tile_bounds(out_t, g.shapes[root], g.layouts[root])
    _, first = np.unique(config_feat, axis=0, return_index=True)
    config_feat = config_feat[rng.permutation(np.sort(first)[:n_configs])]  # the one-tile config anywhere
    c = len(config_feat)
    if labelled:
        default = np.zeros((1, 24), np.float32)
        for node, start in ((main, TILE_KERNEL), (root, TILE_OUTPUT)):
            shape, layout = g.shapes[node], g.layouts[node]
            default[:, start : start + 8] = _tile_bounds(_default_tile(shape, layout), shape, layout)
        runtime = _noisy(
            rng, tile_runtime(g.feat, arrays["node_opcode"], arrays["edge_index"], config_feat), TILE_NOISE_SIGMA
        )
        normalizer = np.full(
            c,
            _noisy(rng, tile_runtime(g.feat, arrays["node_opcode"], arrays["edge_index"], default), TILE_NOISE_SIGMA)[
                0
            ],
        )
    else:
        runtime, normalizer = np.zeros(c, np.int64), np.ones(c, np.int64)
    return {
        **arrays,
        "edge_index": _file_edges(arrays["edge_index"], layout=False),
        "config_feat": config_feat,
        "config_runtime": runtime,
        "config_runtime_normalizers": normalizer,
    }


# =============================================================================================
# Layout configs
# =============================================================================================
def _layout_values(
    rng: np.random.Generator, variables: list[tuple[int, int, int]], n_configs: int, search: str
) -> tuple[np.ndarray, np.ndarray]:
    """(c, 3 nc) int16 perm indices and a (c, nc) mask of rows written as -1 (compiler default).

    Small dtypes (int16 values, float32 draws) keep a real-scale graph's temporaries well
    below the size of its node_config_feat."""
    nc = len(variables) // 3
    n_perms = np.array([len(_perms(r)) for r, _, _ in variables], np.int16)
    values = np.tile(np.array([d for _, d, _ in variables], np.int16), (n_configs, 1))
    if search == "random":
        as_default = rng.random((n_configs, nc), np.float32) < rng.uniform(0.2, 0.6)
        drawn = (rng.random(values.shape, np.float32) * n_perms).astype(np.int16)
        np.copyto(values, drawn, where=~np.repeat(as_default, 3, axis=1))
        return values, as_default
    choosable = np.flatnonzero(n_perms > 1)
    n_changes = np.minimum(1 + rng.poisson(DEFAULT_SEARCH_MUTATIONS, n_configs), len(choosable))
    n_changes[0] = 0  # config 0 is the compiler default itself
    keys = rng.random((n_configs, len(choosable)), np.float32)  # the n smallest keys of a row pick its variables
    kth = np.sort(keys, axis=1)[np.arange(n_configs), np.maximum(n_changes - 1, 0)]
    mutate = np.zeros(values.shape, bool)
    mutate[:, choosable] = (keys <= kth[:, None]) & (n_changes[:, None] > 0)
    del keys
    offset = 1 + (rng.random(values.shape, np.float32) * (n_perms - 1)).astype(np.int16)
    np.copyto(values, (values + offset) % np.maximum(n_perms, 1), where=mutate)
    changed = mutate.reshape(n_configs, nc, 3).any(axis=2)
    as_default = ~changed & (rng.random((n_configs, nc), np.float32) < 0.05)
    return values, as_default


def _layout_config_feat(
    values: np.ndarray, as_default: np.ndarray, variables: list[tuple[int, int, int]]
) -> np.ndarray:
    """(c, nc, 18) float32 minor-to-major rows; -1 pads dims beyond the rank and marks defaults."""
    c, nc = as_default.shape
    feat = np.full((c, nc, 18), -1.0, np.float32)
    for k, (rank, _, col) in enumerate(variables):
        if rank == 0:
            continue
        j = k // 3
        explicit = ~as_default[:, j]
        feat[explicit, j, col : col + rank] = _perms(rank)[values[explicit, k]]
    return feat


def _node_splits(rng: np.random.Generator, n: int) -> np.ndarray:
    inner = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(0, 4))), replace=False))
    return np.concatenate([[0], inner, [n]]).astype(np.int64)[None, :]


def make_layout_graph(
    rng: np.random.Generator,
    n_nodes: int,
    n_configurable: int,
    n_configs: int,
    *,
    source: str = "xla",
    search: str = "random",
    labelled: bool = True,
    operand_order: bool = False,
) -> dict[str, np.ndarray]:
    """One ``layout:{source}:{search}`` graph's arrays as a file holds them (key order; edge rows
    sorted by id, column-major), or with ``operand_order`` the edge rows in operand order, which
    :func:`layout_runtime` needs (the other arrays are the same).

    Memory: the only big array is node_config_feat (c x nc x 18 float32), built once in place;
    runtimes are computed from it variable by variable. ``labelled=False`` gives a test file."""
    nodes = _build_graph(rng, source, "layout", n_nodes, n_configurable)
    arrays = _node_arrays(nodes)
    config_ids = np.array([i for i, nd in enumerate(nodes) if nd.opcode in CONFIGURABLE], np.int64)
    g = _parse(arrays["node_feat"], arrays["node_opcode"], arrays["edge_index"])
    energy, variables = _layout_energy(g, config_ids)
    values, as_default = _layout_values(rng, variables, n_configs, search)
    config_feat = _layout_config_feat(values, as_default, variables)
    del values
    if labelled:
        runtime = _noisy(rng, energy.evaluate(_decode_configs(config_feat, variables)), LAYOUT_NOISE_SIGMA)
    else:
        runtime = np.zeros(n_configs, np.int64)
    return {
        **arrays,
        "edge_index": arrays["edge_index"] if operand_order else _file_edges(arrays["edge_index"], layout=True),
        "node_config_feat": config_feat,
        "node_config_ids": config_ids,
        "config_runtime": runtime,
        "node_splits": _node_splits(rng, len(nodes)),
    }


# =============================================================================================
# Writing
# =============================================================================================
def write_graph(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    """Write one .npz byte-for-byte reproducibly (fixed zip timestamps), atomically.

    Arrays stream into deflated zip members, so no second copy of a big array is made."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for key, arr in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info._compresslevel = ZIP_LEVEL  # no public setter before Python 3.13
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)  # keeps Fortran order

    write_atomic(path, write)


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _sizes(
    collection: Collection, split: str, gi: int, preset: Preset, rng: np.random.Generator
) -> tuple[int, int, int]:
    """(nodes, configurable nodes, configs) of one graph, drawn first from its generator."""
    if not collection.kind.config_per_node:
        n_nodes = _draw(rng, (preset.tile_nodes[0], preset.tile_nodes[1] - MAX_OVERSHOOT))
        return n_nodes, 0, _draw(rng, preset.tile_configs)
    size = preset.layout[collection.source]
    n_configurable = _draw(rng, size.configurable)
    n_nodes = _draw(rng, (max(size.nodes[0], NODES_PER_CONFIGURABLE * n_configurable), size.nodes[1] - MAX_OVERSHOOT))
    n_configs = _draw(rng, size.configs)
    if split == "test" and preset.layout_test_configs is not None:
        n_configs = preset.layout_test_configs
        if preset.extra_config_test_file and collection == _quirk_collection() and gi == 0:
            n_configs += 1
    return n_nodes, n_configurable, n_configs


def _make(
    collection: Collection, split: str, gi: int, preset: Preset, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    labelled = split != "test"
    n_nodes, n_configurable, n_configs = _sizes(collection, split, gi, preset, rng)
    if not collection.kind.config_per_node:
        return make_tile_graph(rng, n_nodes, n_configs, labelled=labelled)
    return make_layout_graph(
        rng,
        n_nodes,
        n_configurable,
        n_configs,
        source=collection.source,
        search=collection.search,
        labelled=labelled,
    )


def _quirk_collection() -> Collection:
    """The collection whose first test file holds one config more than its sample row lists."""
    return next(c for c in COLLECTIONS if c.kind.config_per_node)


def _graph_count(preset: Preset, collection: Collection, split: str) -> int:
    counts = preset.layout_graphs[collection.source] if collection.kind.config_per_node else preset.tile_graphs
    return counts[SPLITS.index(split)]


def _graph_rng(seed: int, collection: Collection, split: str, gi: int) -> tuple[np.random.Generator, str]:
    """The generator of one graph, seeded by (seed, collection, split, index), and its file name
    (its first 16 bytes)."""
    rng = np.random.default_rng([seed, COLLECTIONS.index(collection), SPLITS.index(split), gi])
    return rng, rng.bytes(16).hex()


def operand_edge_index(path: Path | str, preset: str, seed: int) -> np.ndarray:
    """The (m, 2) int64 edge rows of a file ``write_dataset(root, preset, seed)`` wrote, in the
    operand order its runtimes were computed from (the input of :func:`layout_runtime` and
    :func:`tile_runtime`), rebuilt from the seed: the file lists them sorted by id.

    Raises ValueError when ``path`` is not in the real layout or is not a file that preset and
    seed write (its name, nodes or edges differ)."""
    path = Path(path)
    collection, split = locate(path)
    if collection is None or split is None:
        raise ValueError(f"{path}: not under npz/<collection>/<split>/ of a synthetic dataset")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    for gi in range(_graph_count(spec, collection, split)):
        rng, name = _graph_rng(seed, collection, split, gi)
        if name == path.stem:
            break
    else:
        raise ValueError(f"{path}: preset {preset!r} with seed {seed} writes no file of this name")
    n_nodes, n_configurable, _ = _sizes(collection, split, gi, spec, rng)
    kind = "layout" if collection.kind.config_per_node else "tile"
    arrays = _node_arrays(_build_graph(rng, collection.source, kind, n_nodes, n_configurable))
    with np.load(path) as stored:
        same = np.array_equal(stored["node_feat"], arrays["node_feat"]) and np.array_equal(
            stored["edge_index"], _file_edges(arrays["edge_index"], layout=kind == "layout")
        )
    if not same:
        raise ValueError(f"{path}: its nodes or edges are not those preset {preset!r} with seed {seed} generates")
    return arrays["edge_index"]


def write_dataset(out: Path | str, preset: str = "small", seed: int = 0, *, overwrite: bool = False) -> None:
    """Write a whole synthetic dataset in the real layout, all or nothing.

    Everything goes to a temporary sibling directory renamed to ``out`` at the end, so a crash
    leaves no half dataset. Each graph draws from its own generator seeded by (seed,
    collection, split, index): same seed, same bytes."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    spec, out = PRESETS[preset], Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    with replaced_dir(out) as tmp:
        rows = ["ID,TopConfigs"]
        for col in COLLECTIONS:
            for split in SPLITS:
                folder = col.split_dir(tmp, split)
                folder.mkdir(parents=True)
                for gi in range(_graph_count(spec, col, split)):
                    rng, name = _graph_rng(seed, col, split, gi)
                    arrays = _make(col, split, gi, spec, rng)
                    write_graph(folder / f"{name}.npz", arrays)
                    if split == "test":
                        listed = col.kind.top_k or spec.layout_test_configs or len(arrays["config_runtime"])
                        rows.append(f"{col.submission_id(name)},{';'.join(map(str, range(listed)))}")
        (tmp / "sample_submission.csv").write_text("\n".join(rows) + "\n")
