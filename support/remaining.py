"""The remaining indices of smart batching, with fast removal of a run (helpers.smart_batch_indices).

The recipe takes each batch at a random start among the remaining sequences and deletes it from
one Python list, which shifts the rest of the list: O(n) a batch. The same draws on this structure
give the same batches at O(log n) a batch.
"""
from __future__ import annotations

import numpy as np


class RemainingInOrder:
    """The not-yet-batched indices in length order, with fast 'remove the run at rank r'.

    The recipe deletes each batch from one Python list, O(n) a deletion (benchmarks/
    batching_speed.py times both). Here they sit in chunks, and a Fenwick tree over the chunk
    sizes finds the chunk holding rank r in O(log n)."""

    def __init__(self, order: np.ndarray, chunk: int = 4096):
        self.chunks = [order[i:i + chunk].tolist() for i in range(0, len(order), chunk)]
        self.size = len(order)
        self.tree = [0] * (len(self.chunks) + 1)  # Fenwick tree, 1-based
        for i, c in enumerate(self.chunks):
            self._add(i, len(c))
        self.top = 1 << max(0, len(self.chunks).bit_length() - 1)

    def _add(self, i: int, delta: int) -> None:
        i += 1
        while i < len(self.tree):
            self.tree[i] += delta
            i += i & -i

    def _find(self, rank: int) -> tuple[int, int]:
        """(chunk, offset) of the item with this rank among the remaining ones."""
        tree = self.tree
        pos = 0
        step = self.top
        while step:  # Fenwick descent: the largest prefix of chunks holding <= rank items
            nxt = pos + step
            if nxt < len(tree) and tree[nxt] <= rank:
                pos = nxt
                rank -= tree[nxt]
            step >>= 1
        return pos, rank

    def pop_run(self, start: int, count: int) -> list[int]:
        """Remove and return the `count` items of ranks start .. start+count-1."""
        run: list[int] = []
        while len(run) < count:
            chunk, offset = self._find(start)  # `start` stays put: later items shift down to it
            items = self.chunks[chunk]
            piece = items[offset:offset + count - len(run)]
            del items[offset:offset + len(piece)]
            self._add(chunk, -len(piece))
            run.extend(piece)
        self.size -= count
        return run
