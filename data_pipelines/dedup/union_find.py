"""Union-find over integer node keys whose smallest member represents each set."""

from __future__ import annotations

import numpy as np


def min_representatives(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clusters the nodes joined by `edges` (int64 array of shape [n, 2]).

    Returns (nodes, representatives): every node that appears in an edge and the smallest node
    of its connected component. Node keys are ordered so that "smallest" is the document to keep.
    """
    nodes, compact = np.unique(edges.reshape(-1), return_inverse=True)
    compact = compact.reshape(-1, 2)
    parent = np.arange(len(nodes))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in compact.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            # Compact indices follow key order, so the smaller root stays the root.
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(len(nodes))], dtype=np.int64)
    return nodes, nodes[roots]
