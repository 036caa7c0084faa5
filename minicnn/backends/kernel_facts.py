"""What Python must know about the GEMM and convolution kernels, read from the kernels' sources.

Tile sizes and thread counts are written once, as `constexpr int` in kernels/gemm.cu (v2's
tile shapes in its SIMT_SHAPES table); this module parses them (source_constants,
simt_products), so a launcher cannot compute a grid for tiles the kernel does not use. Next to
them: each product kernel's launch contract (TiledProduct: block size, output tile, grid,
split-K), the choice of tile per product (best_tile; backward_tiles for backward.cu's two
products in one block size), the instantiation names per precision, and ConvShape, the named
twin of conv.cu's `struct ConvShape`.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minicnn.backends.precision import PRECISIONS

KERNELS_DIR = Path(__file__).resolve().parents[2] / "kernels"
_CONSTEXPR = re.compile(r"constexpr\s+int\s+([^;(]*);")
_STRUCT = r"struct\s+{}\s*{{\s*int\s+([^;]*);\s*}};"
_SIMT_SHAPES = re.compile(r"constexpr\s+int\s+SIMT_SHAPES\[\]\[3\]\s*=\s*\{(.*?)\};", re.S)

# Split-K aims for this many blocks: two per SM of a 132-SM H100, enough to fill any current
# GPU. A constant, not a device query, so that the summation order (and thus the bits of the
# result) is the same on every GPU.
TARGET_BLOCKS = 264
MIN_SPLIT_K = 256  # at least this much K per split-K slice

# The v3 block loop per tensor-core precision (gemm.cu's Mma enum and MmaTile policy).
MMA_TYPES = {"tf32": "Mma::TF32", "bf16": "Mma::BF16"}
CONV_PASSES = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight")
# Their fused and one-launch split-K twins (issue 12), instantiated on the same block loops.
CONV_TWINS = ("conv2d_relu_forward", "conv2d_forward_split_k", "conv2d_backward_data_split_k",
              "conv2d_backward_weight_split_k")
# backward.cu: a layer's gradients (data, weights with the bias column) in one launch
BACKWARD_KERNELS = ("conv2d_backward", "linear_backward")


def source_constants(path: Path) -> dict[str, int]:
    """Every `constexpr int NAME = <integer literal>` of a kernel source (expressions skipped)."""
    constants = {}
    for declaration in _CONSTEXPR.findall(Path(path).read_text()):
        for item in declaration.split(","):
            name, _, value = (part.strip() for part in item.partition("="))
            if value.isdigit():
                constants[name] = int(value)
    return constants


def struct_fields(path: Path, struct: str) -> list[str]:
    """The field names of `struct <struct> { int a, b, ...; };` in a kernel source."""
    match = re.search(_STRUCT.format(struct), Path(path).read_text())
    if match is None:
        raise ValueError(f"{path} has no `struct {struct} {{ int ...; }};`")
    return [name.strip() for name in match.group(1).split(",")]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_k(tiles: int, depth: int, tile_k: int) -> tuple[int, int]:
    """(splits, k_chunk): how to cut a product's K into slices computed by separate blocks.

    Splits only when the output has too few tiles to fill the GPU; k_chunk is a multiple of
    tile_k and every slice but the last has exactly k_chunk values of K.
    """
    splits = max(1, min(cdiv(TARGET_BLOCKS, tiles), depth // MIN_SPLIT_K))
    k_chunk = max(tile_k, cdiv(cdiv(depth, splits), tile_k) * tile_k)
    return max(1, cdiv(depth, k_chunk)), k_chunk


@dataclass(frozen=True)
class TiledProduct:
    """Launch contract of one of gemm.cu's block loops: `threads` threads compute a
    tile_m x tile_n tile of the output, walking K in steps of tile_k."""

    threads: int
    tile_m: int
    tile_n: int
    tile_k: int
    policy: str = dataclasses.field(default="", compare=False)  # gemm.cu's C++ name of the loop

    def grid(self, rows: int, cols: int, splits: int = 1, extra_blocks: int = 0) -> tuple[int, int, int]:
        """(column tiles, row tiles, K slices): blockIdx.x walks columns, as the kernels expect.
        extra_blocks: at least that many blocks more, for other work (a forward conv's weight
        transpose, conv.cu's transposing_block), as whole columns after the output's."""
        row_tiles = cdiv(rows, self.tile_m)
        return cdiv(cols, self.tile_n) + cdiv(extra_blocks, row_tiles * splits), row_tiles, splits

    def split(self, rows: int, cols: int, depth: int) -> tuple[int, int]:
        """(splits, k_chunk) for a rows x cols output over `depth` (see split_k); an empty
        output has one slice."""
        tiles = cdiv(rows, self.tile_m) * cdiv(cols, self.tile_n)
        return split_k(tiles, depth, self.tile_k) if tiles else (1, self.tile_k)


def simt_products(kernels_dir: Path = KERNELS_DIR) -> list[TiledProduct]:
    """v2's tile shapes, gemm.cu's SIMT_SHAPES {rows, cols, threads}, as launch contracts of
    SimtTile<rows, cols, threads>; the first is the default (gemm_v2's) 64 x 64."""
    path = Path(kernels_dir) / "gemm.cu"
    constants = source_constants(path)
    table = _SIMT_SHAPES.search(path.read_text())
    if table is None:
        raise ValueError(f"{path} has no `constexpr int SIMT_SHAPES[][3] = {{...}};`")
    products = []
    for row in re.findall(r"\{([^{}]*)\}", table.group(1)):
        rows, cols, threads = (constants[v] if v in constants else int(v) for v in map(str.strip, row.split(",")))
        products.append(TiledProduct(threads, rows, cols, constants["TILE_K"],
                                     policy=f"SimtTile<{rows}, {cols}, {threads}>"))
    return products


def padded_cells(product: TiledProduct, rows: int, cols: int) -> int:
    """The cells of a rows x cols output that product's tiles compute, padding included."""
    return cdiv(rows, product.tile_m) * product.tile_m * cdiv(cols, product.tile_n) * product.tile_n


def best_tile(products: list[TiledProduct], rows: int, cols: int) -> TiledProduct:
    """The tile for a rows x cols output: the first listed (the default 64 x 64, which reuses
    each loaded value most) unless it would waste more than an eighth of its cells, then the
    one computing the fewest padding cells (the first on a tie). The other shapes cost ~1.2-1.4x
    the default's instructions per cell (benchmarks/sass_counts.py), so a tile 90% useful
    stays."""
    if padded_cells(products[0], rows, cols) * 7 <= rows * cols * 8:
        return products[0]
    return min(products, key=lambda product: padded_cells(product, rows, cols))


def backward_tiles(products: list[TiledProduct], weight, data) -> tuple[TiledProduct, TiledProduct]:
    """(weight tile, data tile): the block loops of backward.cu's two products, one launch.
    weight, data: the products' (rows, cols, depth), data with 0 cols when dx is not wanted
    (its tile is then the weight's). Each product takes its own launch's best_tile when the two
    have the same thread count (a block has one size); otherwise the best_tile pair among the
    products of one thread count whose cells, padding included and weighed by depth, are fewest
    (the first count listed on a tie). A 32 -> 32-channel layer keeps 32 x 32 for both: 32 x 128
    tiles would compute a third more cells of its 32 x 288 weight product and save none of its
    data product's."""
    shapes = [weight, data] if data[1] else [weight]

    def pair(candidates):
        tiles = [best_tile(candidates, rows, cols) for rows, cols, _ in shapes]
        return tiles[0], tiles[-1]

    own = pair(products)
    if own[0].threads == own[1].threads:
        return own
    pairs = [pair([p for p in products if p.threads == threads])
             for threads in dict.fromkeys(p.threads for p in products)]
    return min(pairs, key=lambda tiles: sum(padded_cells(tile, rows, cols) * depth
                                            for tile, (rows, cols, depth) in zip(tiles, shapes)))


def tiled_products(kernels_dir: Path = KERNELS_DIR) -> dict[str, TiledProduct]:
    """precision -> the launch contract of its default block loop, from gemm.cu's constants:
    fp32 runs SimtTile (gemm_v2; convolutions choose among simt_products), tf32 and bf16 run
    MmaTile (gemm_v3)."""
    c = source_constants(Path(kernels_dir) / "gemm.cu")
    simt = simt_products(kernels_dir)[0]
    mma = {p: dataclasses.replace(simt, threads=c["MMA_THREADS"], policy=f"MmaTile<{MMA_TYPES[p]}>")
           for p in MMA_TYPES}
    return {"fp32": simt, **mma}


def gemm_kernel(precision: str, trans_a: bool, trans_b: bool) -> str:
    """The tiled GEMM for a precision: gemm_v2 (any float type {T}) or gemm_v3 (float)."""
    flags = f"{str(bool(trans_a)).lower()}, {str(bool(trans_b)).lower()}"
    return f"gemm_v2<{{T}}, {flags}>" if precision == "fp32" else f"gemm_v3<{MMA_TYPES[precision]}, {flags}>"


def conv_kernel(name: str, product: TiledProduct) -> str:
    """conv.cu's pass `name` run by `product`'s block loop: SimtTile for any float type {T},
    MmaTile for float. Spelt out in full (also SimtTile's default arguments), as the compiled
    symbol names it, so that `minicnn profile` finds its compiler facts."""
    return f"{name}<{{T}}, {product.policy}>" if product.policy.startswith("Simt") else \
        f"{name}<float, {product.policy}>"


def backward_kernel(name: str, weight_tile: TiledProduct, data_tile: TiledProduct) -> str:
    """backward.cu's kernel `name` with its weight product run by weight_tile's block loop and
    its data product by data_tile's: conv_kernel's spelling, data_tile's policy added only when
    it differs (the kernels default it to weight_tile's, so equal pairs keep one name)."""
    expression = conv_kernel(name, weight_tile)
    return expression if data_tile.policy == weight_tile.policy else f"{expression[:-1]}, {data_tile.policy}>"


def backward_instantiations(kernels_dir: Path = KERNELS_DIR) -> list[str]:
    """backward.cu's kernels on every pair backward_tiles can choose: two SIMT shapes of one
    thread count (either order, or the same twice), or a tensor-core loop with itself."""
    simt = simt_products(kernels_dir)
    mma = [p for name, p in tiled_products(kernels_dir).items() if name != "fp32"]
    pairs = [(w, d) for w in simt for d in simt if w.threads == d.threads] + [(p, p) for p in mma]
    return [backward_kernel(name, *tiles) for tiles in pairs for name in BACKWARD_KERNELS]


def gemm_instantiations() -> list[str]:
    flags = [(ta, tb) for ta in (False, True) for tb in (False, True)]
    naive = [f"gemm_v1<{{T}}, {str(ta).lower()}, {str(tb).lower()}>" for ta, tb in flags]
    return naive + [gemm_kernel(p, ta, tb) for p in PRECISIONS for ta, tb in flags]


def conv_instantiations(kernels_dir: Path = KERNELS_DIR, names=CONV_PASSES + CONV_TWINS) -> list[str]:
    """conv.cu's passes (or other kernels `names` templated on <T, Tile>, such as backward.cu's)
    on every SIMT tile shape and tensor-core loop of kernels_dir's sources."""
    tiles = simt_products(kernels_dir) + [p for name, p in tiled_products(kernels_dir).items() if name != "fp32"]
    return [conv_kernel(name, p) for p in tiles for name in names]


@dataclass(frozen=True)
class ConvShape:
    """A convolution's sizes, field for field conv.cu's `struct ConvShape` (the kernels take
    them as int arguments in this order): x (N, C, H, W), w (F, C, kh, kw), stride (sh, sw),
    top and left pads (pt, pl), output (Ho, Wo)."""

    N: int
    C: int
    H: int
    W: int
    F: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    Ho: int
    Wo: int

    def ints(self) -> tuple[int, ...]:
        """The fields in the kernels' argument order."""
        return dataclasses.astuple(self)

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return self.N, self.C, self.H, self.W

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return self.N, self.F, self.Ho, self.Wo

    @property
    def patch(self) -> int:
        """C * kh * kw: the depth of the forward product (a row of the weights)."""
        return self.C * self.kh * self.kw


def conv_taps(s: ConvShape, of_x: bool) -> np.ndarray:
    """conv.cu's kernel taps, (rows, 2) int32: for row (c, i, j) of the im2col matrix of x
    (of_x), the element's offset c*H*W + i*W + j from its pixel's window origin and
    i << 16 | j; for row (f, i, j) of dY_col, f*Ho*Wo and i, j divided by the stride as
    qi << 24 | ri << 16 | qj << 8 | rj (i = qi * sh + ri)."""
    if max(s.kh, s.kw, s.sh, s.sw) > 255:
        raise ValueError(f"the CUDA convolutions take kernels and strides up to 255, got kernel "
                         f"{s.kh}x{s.kw}, stride {s.sh}x{s.sw}")
    channel, i, j = np.meshgrid(np.arange(s.C if of_x else s.F), np.arange(s.kh), np.arange(s.kw),
                                indexing="ij")
    if of_x:
        return np.stack([(channel * s.H * s.W + i * s.W + j).ravel(), (i << 16 | j).ravel()],
                        axis=1).astype(np.int32)
    divided = (i // s.sh) << 24 | (i % s.sh) << 16 | (j // s.sw) << 8 | j % s.sw
    return np.stack([(channel * s.Ho * s.Wo).ravel(), divided.ravel()], axis=1).astype(np.int32)



def split_k_kernel(precision: str, trans_a=False, trans_b=False) -> str:
    """The one-launch split-K twin (its slices added by the last block) of gemm.cu's tiled GEMM.
    conv.cu's twins are conv_kernel("conv2d_<pass>_split_k", tile) (CONV_TWINS)."""
    return gemm_twin("gemm_split_k", precision, trans_a, trans_b)


def gemm_twin(name: str, precision: str, trans_a=False, trans_b=False) -> str:
    """gemm.cu's kernel `name` <T, TRANS_A, TRANS_B, Tile>, one of the tiled GEMM's twins
    (gemm_split_k, gemm_bias), with the block loop of `precision` (SimtTile by default)."""
    flags = f"{str(bool(trans_a)).lower()}, {str(bool(trans_b)).lower()}"
    if precision == "fp32":
        return f"{name}<{{T}}, {flags}>"
    return f"{name}<float, {flags}, MmaTile<{MMA_TYPES[precision]}>>"


def split_k_instantiations() -> list[str]:
    flags = [(ta, tb) for ta in (False, True) for tb in (False, True)]
    return [split_k_kernel(p, ta, tb) for p in PRECISIONS for ta, tb in flags]


@dataclass(frozen=True)
class BackwardPlan:
    """Launch geometry of backward.cu's kernels (a layer's gradients in one 1-D grid): the
    weight product's and the data product's blocks (one per output tile of the product's own
    tile shape per K slice; the slices (splits, k_chunk) those of each product's own launch),
    then the bias's, channel_sums' (channels x slices) blocks."""

    weight: tuple[int, int]  # (splits, k_chunk)
    data: tuple[int, int]
    bias_slices: int         # 0: no bias gradient
    segments: tuple          # blocks of the weight product, the data product, the bias
    counters: int            # arrival counters: one per output tile of either product, per channel

    @property
    def blocks(self) -> int:
        """The grid."""
        return sum(self.segments)

    @classmethod
    def of(cls, products, weight, data, splits, bias) -> "BackwardPlan":
        """products: the (weight, data) products' block loops (backward_tiles); weight, data:
        each product's (rows, cols); splits: each product's (splits, k_chunk); bias:
        (channels, slices)."""
        tiles = [cdiv(rows, product.tile_m) * cdiv(cols, product.tile_n)
                 for product, (rows, cols) in zip(products, (weight, data))]
        channels, slices = bias
        return cls(*splits, slices, segments=(*(t * s for t, (s, _) in zip(tiles, splits)), channels * slices),
                   counters=sum(tiles) + channels)


def named_products(kernel: str, kernels_dir: Path = KERNELS_DIR) -> list[TiledProduct]:
    """The block loops an instantiation expression names as template arguments
    (SimtTile<...>, MmaTile<...>), in order; spaces in the expression do not matter."""
    loops = simt_products(kernels_dir) + list(tiled_products(kernels_dir).values())
    by_policy = {p.policy.replace(" ", ""): p for p in loops}
    return [by_policy[name] for name in re.findall(r"\w+Tile<[^<>]*>", kernel.replace(" ", ""))
            if name in by_policy]


def backward_segments(kernel: str, scalars, kernels_dir: Path = KERNELS_DIR) -> tuple | None:
    """The BackwardPlan segments of a launch of backward.cu's `kernel` (its instantiation
    expression) from its int arguments in order; None for any other kernel. (The emulator's
    counters sample each segment on its own: their blocks do different work.)"""
    launch = backward_launch(kernel, scalars, kernels_dir)
    return launch and launch[-1].segments


def backward_launch(kernel: str, scalars, kernels_dir: Path = KERNELS_DIR) -> tuple | None:
    """((weight tile, data tile), weight product, data product, BackwardPlan) of a launch of
    backward.cu's `kernel` from its int arguments in order, the products as (rows, cols,
    depth), data with 0 cols without dx; None for any other kernel."""
    name = kernel.split("<")[0]
    if name not in BACKWARD_KERNELS:
        return None
    named = named_products(kernel, kernels_dir)  # backward_kernel's: weight's, then data's if other
    if name == "conv2d_backward":
        n, c, h, w, f, kh, kw, *_, ho, wo = scalars[:13]
        dx_splits, dx_chunk, dw_splits, dw_chunk, slices, with_dx = scalars[13:19]
        weight, data = (f, c * kh * kw, n * ho * wo), (c, n * h * w if with_dx else 0, f * kh * kw)
        channels = f
    else:
        n, inputs, outputs, dx_splits, dx_chunk, dw_splits, dw_chunk, slices, with_dx = scalars[:9]
        weight, data, channels = (outputs, inputs, n), (n if with_dx else 0, inputs, outputs), outputs
    tiles = named[0], named[-1]
    plan = BackwardPlan.of(tiles, weight[:2], data[:2], ((dw_splits, dw_chunk), (dx_splits, dx_chunk)),
                           (channels if slices else 0, slices))
    return tiles, weight, data, plan


@functools.lru_cache(maxsize=None)
def weight_transpose_tile(taps: int, values: str = "TRANSPOSE_VALUES",
                          kernels_dir: Path = KERNELS_DIR) -> tuple[int, int]:
    """(filters, channels) of one tile of conv.cu's weight transpose for kernels of `taps`
    cells: TRANSPOSE_FILTERS filters (fewer for huge kernels) and as many channels as fit in
    the tile's `values` (conv.cu's constant of that name: TRANSPOSE_VALUES in
    conv_weight_transpose, 16 x 16 cells of 3 x 3; FORWARD_TRANSPOSE_VALUES in a forward
    block)."""
    c = source_constants(Path(kernels_dir) / "conv.cu")
    if taps > c["TRANSPOSE_VALUES"]:
        raise ValueError(f"conv2d: the CUDA kernels take kernels of at most {c['TRANSPOSE_VALUES']} "
                         f"cells, got {taps}")
    filters = min(c["TRANSPOSE_FILTERS"], c[values] // taps)
    return (filters, c[values] // (filters * taps)) if filters else (0, 0)  # (0, 0): too large


def transpose_tiles(filters: int, channels: int, tile: tuple[int, int]) -> int:
    """How many tiles of tile = (filters, channels) cells cover w: (filters, channels, taps)."""
    return cdiv(filters, tile[0]) * cdiv(channels, tile[1])


@functools.lru_cache(maxsize=None)
def weight_transpose_launch(filters: int, channels: int, taps: int,
                            kernels_dir: Path = KERNELS_DIR) -> tuple[tuple, tuple, tuple]:
    """(grid, block, (tile filters, tile channels)) of conv.cu's conv_weight_transpose for w:
    (filters, channels, taps)."""
    tile = weight_transpose_tile(taps, kernels_dir=kernels_dir)
    c = source_constants(Path(kernels_dir) / "conv.cu")
    return (cdiv(channels, tile[1]), cdiv(filters, tile[0])), (c["TRANSPOSE_THREADS"],), tile


@dataclass(frozen=True)
class ForwardTranspose:
    """A forward conv launch that also writes wt, its w: (filters, channels, taps) transposed,
    from extra blocks (conv.cu's transposing_block): `tile` = (filters, channels) cells per
    block (the kernels' wt_filters, wt_channels), `blocks` of them; NO_TRANSPOSE: none."""

    tile: tuple[int, int]
    blocks: int


NO_TRANSPOSE = ForwardTranspose((0, 0), 0)


@functools.lru_cache(maxsize=None)
def forward_transpose(filters: int, channels: int, taps: int,
                      kernels_dir: Path = KERNELS_DIR) -> ForwardTranspose:
    """The ForwardTranspose of a forward conv with w: (filters, channels, taps); NO_TRANSPOSE
    for kernels too large for a forward block's tile (their backward transposes w itself)."""
    tile = weight_transpose_tile(taps, "FORWARD_TRANSPOSE_VALUES", kernels_dir)
    return ForwardTranspose(tile, transpose_tiles(filters, channels, tile)) if tile[0] else NO_TRANSPOSE


# conv.cu's forward kernels, whose launches may add weight-transposing blocks (ForwardTranspose)
FORWARD_KERNELS = ("conv2d_forward", "conv2d_forward_split_k", "conv2d_relu_forward")


def block_kinds(kernel: str, scalars, grid, kernels_dir: Path = KERNELS_DIR) -> list | None:
    """The linear block indices of a launch of `kernel` (its instantiation expression; scalars:
    its int arguments in order) grouped by the kind of work they do, for the emulator's counters
    to sample kind by kind; None when every block does the same. backward.cu's kernels: the
    runs of BackwardPlan's segments; a forward conv writing wt: the product's blocks, the
    transposing ones (after the product's in each row of the grid), the extra ones with no tile."""
    segments = backward_segments(kernel, scalars, kernels_dir)
    if segments is not None:
        starts = np.cumsum((0, *segments))
        return [range(start, start + count) for start, count in zip(starts, segments)]
    if kernel.split("<")[0] not in FORWARD_KERNELS or not scalars[-2]:
        return None
    s = ConvShape(*scalars[:13])
    product = named_products(kernel, kernels_dir)[0]
    gx, gy, gz = (tuple(grid) + (1, 1))[:3]
    col_tiles = cdiv(s.N * s.Ho * s.Wo, product.tile_n)
    index = np.arange(gx * gy * gz)
    column = index % gx
    extra = np.where(column < col_tiles, -1, index // gx * (gx - col_tiles) + column - col_tiles)
    tiles = transpose_tiles(s.F, s.C, tuple(scalars[-2:]))
    return [index[extra < 0], index[(extra >= 0) & (extra < tiles)], index[extra >= tiles]]
