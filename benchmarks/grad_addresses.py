"""Do the gradients keep their device addresses from step to step under CuPy's memory pool?

    python benchmarks/grad_addresses.py --arch vgg_like --batch 512 --steps 10
    python benchmarks/grad_addresses.py --lowest-first    # a pool that always reuses the
                                                          # lowest free address of a bin

Adam's multi-tensor launch reaches the gradients through a pointer table in device memory
(minicnn/backends/cuda_optim.py), rebuilt, one host-to-device copy, whenever an address
changes. On the CPU devices NumPy's allocator moves the gradients every step; on a GPU they
are new arrays each step, placed by CuPy's pool. Without a GPU this script replays the
allocations and frees of eager training steps (the "dry" device: every array the step makes
through the array module, freed when Python drops it) through a model of that pool, as
cupy/cuda/memory.pyx's SingleDeviceMemoryPool does it: sizes rounded up to 512 bytes, one bin
of free chunks per rounded size, best fit (the smallest bin that is not empty, splitting the
chunk), neighbours merged on free, and each bin a Python set of chunk objects whose pop()
order follows the chunks' hashes (their ids), not the order of the frees. It prints, per
step, how many gradients moved and whether the table would be uploaded.
"""
from __future__ import annotations

import argparse
import bisect
import weakref

import numpy as np

from minicnn import functional as F
from minicnn import optim, tensor
from minicnn.backends.recording import ALLOCATING, COPYING, Recorder
from minicnn.models.zoo import get_spec

UNIT = 512  # CuPy's allocation unit


class Chunk:
    """A piece of a cudaMalloc'd block: [address, address + size)."""

    def __init__(self, address: int, size: int):
        self.address, self.size = address, size
        self.prev = self.next = None


class PoolModel:
    """SingleDeviceMemoryPool's malloc and free, on numbers instead of device memory."""

    def __init__(self, lowest_first: bool = False):
        """lowest_first: a bin hands out its lowest address instead of CuPy's set.pop()."""
        self.lowest_first = lowest_first
        self.bins: dict[int, set] = {}   # rounded size -> free chunks of that size
        self.sizes: list[int] = []       # the keys of bins, sorted
        self.in_use: dict[int, Chunk] = {}
        self.top = 1 << 20                # the next address a "cudaMalloc" returns

    def _add(self, chunk: Chunk) -> None:
        if chunk.size not in self.bins:
            bisect.insort(self.sizes, chunk.size)
            self.bins[chunk.size] = set()
        self.bins[chunk.size].add(chunk)

    def _remove(self, chunk: Chunk | None) -> bool:
        free = self.bins.get(chunk.size) if chunk is not None else None
        if not free or chunk not in free:
            return False
        free.remove(chunk)
        if not free:
            del self.bins[chunk.size]
            self.sizes.remove(chunk.size)
        return True

    def malloc(self, nbytes: int) -> int:
        size = max(1, -(-nbytes // UNIT)) * UNIT
        start = bisect.bisect_left(self.sizes, size)
        if start < len(self.sizes):
            free = self.bins[self.sizes[start]]
            if self.lowest_first:
                found = min(free, key=lambda chunk: chunk.address)
                free.remove(found)
            else:
                found = free.pop()  # a set: any of the bin's chunks
            if not self.bins[found.size]:
                del self.bins[found.size]
                self.sizes.remove(found.size)
            chunk = self._split(found, size)
        else:
            chunk, self.top = Chunk(self.top, size), self.top + size
        self.in_use[chunk.address] = chunk
        return chunk.address

    def _split(self, chunk: Chunk, size: int) -> Chunk:
        if chunk.size == size:
            return chunk
        head, rest = Chunk(chunk.address, size), Chunk(chunk.address + size, chunk.size - size)
        head.prev, rest.next, head.next, rest.prev = chunk.prev, chunk.next, rest, head
        if chunk.prev is not None:
            chunk.prev.next = head
        if chunk.next is not None:
            chunk.next.prev = rest
        self._add(rest)
        return head

    def free(self, address: int) -> None:
        chunk = self.in_use.pop(address)
        if self._remove(chunk.next):
            chunk = self._merge(chunk, chunk.next)
        if self._remove(chunk.prev):
            chunk = self._merge(chunk.prev, chunk)
        self._add(chunk)

    @staticmethod
    def _merge(head: Chunk, rest: Chunk) -> Chunk:
        merged = Chunk(head.address, head.size + rest.size)
        merged.prev, merged.next = head.prev, rest.next
        if head.prev is not None:
            head.prev.next = merged
        if rest.next is not None:
            rest.next.prev = merged
        return merged


def owner(array) -> np.ndarray:
    """The array that owns the memory of `array` (a view's root base)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def modelled_device(pool: PoolModel, addresses: dict):
    """A dry device whose array allocations go through `pool` (addresses by id of the owner)."""
    device = Recorder(execute="skip").device("dry")
    xp = device.xp

    def placed(function):
        def make(*args, **kwargs):
            out = function(*args, **kwargs)
            root = owner(out)
            if id(root) not in addresses and out.nbytes:
                addresses[id(root)] = pool.malloc(root.nbytes)
                weakref.finalize(root, lambda key=id(root): pool.free(addresses.pop(key)))
            return out
        return make

    for name in ALLOCATING + COPYING:  # instance attributes: found before __getattr__
        setattr(xp, name, placed(getattr(xp, name)))
    return device


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg_like")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lowest-first", action="store_true",
                        help="a deterministic pool: each bin reuses its lowest free address")
    args = parser.parse_args(argv)
    pool, addresses = PoolModel(args.lowest_first), {}
    device = modelled_device(pool, addresses)
    model = get_spec(args.arch).build().to(device)
    model.train()
    optimizer = optim.Adam(model.parameters())
    x = tensor(np.zeros((args.batch, 3, 32, 32), np.float32), device=device)
    labels = device.asarray(np.zeros(args.batch, np.int64))
    params, before = list(model.parameters()), None
    kind = "lowest address first" if args.lowest_first else "CuPy's set order"
    print(f"gradient addresses under a model of CuPy's pool ({kind}), {args.arch}, batch {args.batch}")
    print(f"{'step':>4} {'moved':>6} {'of':>4}  table upload")
    for step in range(1, args.steps + 1):
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        now = [addresses[id(owner(p.grad))] for p in params]
        moved = len(params) if before is None else sum(a != b for a, b in zip(now, before))
        print(f"{step:>4} {moved:>6} {len(params):>4}  {'yes' if moved else 'no'}")
        before = now


if __name__ == "__main__":
    main()
