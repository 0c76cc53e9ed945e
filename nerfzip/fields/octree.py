"""A sparse voxel octree of density and view-dependent colour (PlenOctrees, Yu et al., ICCV
2021): the field that ``bake`` turns any other field into, and that renders fast by traversal.

The box ``aabb`` is split ``depth`` times, so the leaves are the cells of a ``2^depth`` lattice;
only occupied leaves exist. The structure is one byte per internal node, its **child mask**
(bit ``s`` set when child ``s`` exists; child ``s`` covers the octant with x, y, z offsets
``s & 1, s >> 1 & 1, s >> 2 & 1``), for the nodes of levels ``0 .. depth - 1`` in breadth-first
order, each level sorted by Morton code. So the children of a node are contiguous in the next
level, and child ``s`` of node ``n`` is entry ``first(n) + popcount(mask(n) & (2^s - 1))``
there, where ``first`` is the exclusive prefix sum of the level's popcounts. Leaves are in
Morton order too. The masks are all a file needs of the structure; pointers are rebuilt on
load (``OctreeStructure``), after checking that the masks describe exactly ``nodes`` nodes and
``leaves`` leaves.

Each leaf holds a constant density ``relu(sigma)`` and a colour that depends on the
view direction ``d``, either

- ``sh``: real spherical harmonics up to ``sh_degree``, ``c = sigmoid(sum_k k_ck Y_k(d))``
  (PlenOctrees' representation, 3 (l + 1)^2 values per leaf), or
- ``mlp``: a feature vector decoded by one small MLP shared by all leaves,
  ``c = sigmoid(MLP([f, Y(d)]))`` (``features`` values per leaf plus the decoder).

Leaf values are stored channel-first (``sh`` [3 (l + 1)^2, L], ``features`` [F, L]), the
layout per-channel quantization and VQ of ``Field.feature_grids`` expect.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nerfzip.errors import NerfzipError
from nerfzip.fields.base import FeatureGrid, Field, register_field
from nerfzip.fields.sh import SH_DIM, spherical_harmonics
from nerfzip.utils.schema import check, limits

if TYPE_CHECKING:
    from nerfzip.training.config import TrainConfig

MAX_DEPTH = 11
"""Deepest octree: 2048 leaves per axis (Morton codes of 33 bits)."""
POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)
"""Set bits of every byte value."""


@dataclass
class OctreeConfig:
    """Configuration of an octree field: its size and how leaves store colour."""

    depth: int = field(default=8, metadata=limits(1, MAX_DEPTH))
    """Levels below the root: the leaves are cells of a 2^depth lattice over the box."""
    leaves: int = field(default=0, metadata=limits(0, 1 << 30))
    """Occupied leaves."""
    nodes: int = field(default=1, metadata=limits(1, 1 << 30))
    """Internal nodes (one child-mask byte each), the root included."""
    appearance: str = field(default="sh", metadata=limits(choices=("sh", "mlp")))
    """Colour per leaf: "sh" (spherical-harmonic coefficients) or "mlp" (a feature vector
    decoded by a small shared MLP)."""
    sh_degree: int = field(default=2, metadata=limits(0, 3))
    """sh: highest band l of the coefficients (0: a constant colour, 3: 16 per channel)."""
    features: int = field(default=8, metadata=limits(1, 64))
    """mlp: values per leaf."""
    hidden: int = field(default=16, metadata=limits(1, 256))
    """mlp: width of the decoder's hidden layer (its input: the features and the 16 SH of
    the view direction)."""

    def __post_init__(self) -> None:
        check(self, "octree")


def sh_count(degree: int) -> int:
    """Coefficients per colour channel up to band ``degree``: (l + 1)^2."""
    return (degree + 1) ** 2


# --- structure -------------------------------------------------------------------------------
def morton(ijk: Tensor, depth: int) -> Tensor:
    """Morton codes [N] (int64) of lattice cells ``ijk`` [N, 3] (int64, each in [0, 2^depth)):
    bit ``3 b + a`` of the code is bit ``b`` of axis ``a``."""
    code = torch.zeros(ijk.shape[0], dtype=torch.int64, device=ijk.device)
    for b in range(depth):
        for a in range(3):
            code |= ((ijk[:, a] >> b) & 1) << (3 * b + a)
    return code


def demorton(code: Tensor, depth: int) -> Tensor:
    """Inverse of ``morton``: cells [N, 3] (int64)."""
    ijk = torch.zeros(code.shape[0], 3, dtype=torch.int64, device=code.device)
    for b in range(depth):
        for a in range(3):
            ijk[:, a] |= ((code >> (3 * b + a)) & 1) << b
    return ijk


def masks_from_codes(codes: Tensor, depth: int) -> Tensor:
    """Child masks (uint8, breadth-first, each level in Morton order) of the octree whose
    leaves have the sorted, distinct Morton ``codes`` [L]."""
    out = []
    below = codes
    for _ in range(depth):  # from the leaves up
        # ``below``: the distinct nodes one level down, sorted; each names its parent and slot.
        parents, inverse = torch.unique_consecutive(below >> 3, return_inverse=True)
        bits = torch.ones_like(below) << (below & 7)
        mask = torch.zeros(parents.shape[0], dtype=torch.int64, device=codes.device)
        mask.index_add_(0, inverse, bits)  # slots of one parent are distinct: sum = or
        out.append(mask)
        below = parents
    if not out:
        return torch.zeros(0, dtype=torch.uint8)
    if codes.numel() == 0:
        out = [torch.zeros(1, dtype=torch.int64)]
    return torch.cat(out[::-1]).to(torch.uint8)


@dataclass
class OctreeStructure:
    """Pointers rebuilt from the child masks: what point lookups and ray traversal read.

    ``first`` [nodes]: index of a node's first child, into the node array (levels below
    ``depth - 1``) or the leaf array (level ``depth - 1``). ``level_offsets`` [depth + 1]:
    where each level starts in the node array (the last entry: the node count)."""

    depth: int
    masks: Tensor
    first: Tensor
    level_offsets: list[int]

    @property
    def nodes(self) -> int:
        return self.masks.numel()

    @classmethod
    def from_masks(cls, masks: Tensor, depth: int, leaves: int, where: str = "octree"
                   ) -> OctreeStructure:
        """The structure of ``masks`` (uint8 [nodes]); a one-line error unless they describe
        an octree of ``depth`` levels with exactly ``masks.numel()`` nodes and ``leaves``
        leaves (a file's masks are untrusted)."""
        m = masks.detach().to("cpu", torch.int64)
        counts = POPCOUNT[m]
        offsets, first = [0], torch.zeros_like(m)
        size = 1
        for _ in range(depth):
            start = offsets[-1]
            if start + size > m.numel():
                raise NerfzipError(f"{where}: the child masks describe more nodes than the "
                                   f"{m.numel()} stored")
            level = counts[start:start + size]
            first[start:start + size] = torch.cumsum(level, 0) - level
            offsets.append(start + size)
            size = int(level.sum())
        if offsets[-1] != m.numel():
            raise NerfzipError(f"{where}: the child masks describe {offsets[-1]} nodes, "
                               f"{m.numel()} are stored")
        if size != leaves:
            raise NerfzipError(f"{where}: the child masks describe {size} leaves, the "
                               f"config says {leaves}")
        # Pointers of level l index level l + 1: shift them by where that level starts.
        for l in range(depth - 1):
            first[offsets[l]:offsets[l + 1]] += offsets[l + 1]
        device = masks.device
        return cls(depth, masks.detach().to(device, torch.uint8), first.to(device), offsets)

    def lookup(self, cells: Tensor) -> Tensor:
        """Leaf index [N] (int64; -1 where no leaf exists) of lattice cells ``cells`` [N, 3]
        (int64, each coordinate in [0, 2^depth))."""
        return self.descend(cells)[0]

    def descend(self, cells: Tensor) -> tuple[Tensor, Tensor]:
        """Walk from the root towards the leaves of ``cells`` [N, 3]: the leaf index [N]
        (-1 where none exists) and the level [N] of the deepest node on the way, existing or
        empty (``depth`` for a leaf; an empty node of level l is a cube of 2^(depth - l)
        leaves that holds nothing, which a ray can skip whole)."""
        n = cells.shape[0]
        device = cells.device
        node = torch.zeros(n, dtype=torch.int64, device=device)
        level = torch.full((n,), self.depth, dtype=torch.int64, device=device)
        alive = torch.ones(n, dtype=torch.bool, device=device)
        popcount = POPCOUNT.to(device)
        masks = self.masks.to(torch.int64)
        for l in range(self.depth):
            bit = self.depth - 1 - l
            slot = ((cells[:, 0] >> bit) & 1) | (((cells[:, 1] >> bit) & 1) << 1) | \
                (((cells[:, 2] >> bit) & 1) << 2)
            m = masks[node]
            has = ((m >> slot) & 1).bool()
            level = torch.where(alive & ~has, torch.full_like(level, l + 1), level)
            alive &= has
            node = self.first[node] + popcount[m & ((1 << slot) - 1)]
            node = torch.where(alive, node, torch.zeros_like(node))
        return torch.where(alive, node, torch.full_like(node, -1)), level

    def leaf_cells(self) -> Tensor:
        """Lattice cells [L, 3] of the leaves, in leaf order (Morton order)."""
        codes = torch.zeros(1, dtype=torch.int64, device=self.masks.device)
        masks = self.masks.to(torch.int64)
        for l in range(self.depth):
            m = masks[self.level_offsets[l]:self.level_offsets[l + 1]]
            slots = torch.arange(8, device=m.device)
            has = ((m[:, None] >> slots) & 1).bool()  # [n, 8]: children in slot order
            codes = ((codes[:, None] << 3) | slots)[has]
        return demorton(codes, self.depth)


# --- the field -------------------------------------------------------------------------------
@register_field("octree", file_id=5)
class Octree(Field):
    """A baked octree over ``aabb``. Tensors: ``masks`` (uint8 [nodes], the structure),
    ``sigma`` [L] (density before its ReLU) and either ``sh`` [3 (l + 1)^2, L] or
    ``features`` [F, L] plus ``decoder.{0,2}`` (F + 16 -> hidden -> 3)."""

    config_cls = OctreeConfig

    def __init__(self, config: OctreeConfig, aabb: Tensor, seed: int = 0):
        super().__init__(aabb)
        self.config = config
        n = config.leaves
        self.register_buffer("masks", torch.zeros(config.nodes, dtype=torch.uint8))
        self.sigma = nn.Parameter(torch.zeros(n))
        if config.appearance == "sh":
            self.sh = nn.Parameter(torch.zeros(3 * sh_count(config.sh_degree), n))
        else:
            self.features = nn.Parameter(torch.zeros(config.features, n))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.decoder = nn.Sequential(nn.Linear(config.features + SH_DIM, config.hidden),
                                             nn.ReLU(inplace=True), nn.Linear(config.hidden, 3))
        self._structure: tuple[Any, OctreeStructure] | None = None

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().load_tensors(tensors)
        self.structure()  # check the masks now, not at the first render

    @classmethod
    def from_leaves(cls, aabb: Tensor, cells: Tensor, config: OctreeConfig,
                    seed: int = 0) -> tuple[Octree, Tensor]:
        """An octree with a leaf at each of the distinct lattice ``cells`` [L, 3] (leaf data
        zero) and the order of its leaves: ``order`` [L] such that leaf ``i`` is
        ``cells[order[i]]``."""
        depth = config.depth
        codes = morton(cells.to(torch.int64), depth)
        codes, order = torch.sort(codes)
        if codes.numel() > 1 and bool((codes[1:] == codes[:-1]).any()):
            raise NerfzipError("octree: the leaf cells are not distinct")
        masks = masks_from_codes(codes, depth)
        config = dataclasses.replace(config, leaves=codes.numel(), nodes=masks.numel())
        tree = cls(config, aabb, seed)
        tree.masks.copy_(masks)
        return tree, order

    def keep_leaves(self, keep: Tensor) -> Octree:
        """A new octree with only the leaves where ``keep`` [L] (bool) is set, their values
        and the decoder kept; nodes left without leaves disappear."""
        cells = self.structure().leaf_cells()[keep]
        tree, order = Octree.from_leaves(self.aabb.cpu(), cells.cpu(), self.config)
        tree.to(self.aabb.device)
        # A subset of leaves in Morton order is still in Morton order: ``order`` is identity.
        with torch.no_grad():
            tree.sigma.copy_(self.sigma[keep])
            if self.config.appearance == "sh":
                tree.sh.copy_(self.sh[:, keep])
            else:
                tree.features.copy_(self.features[:, keep])
                tree.decoder.load_state_dict(self.decoder.state_dict())
        return tree

    def structure(self) -> OctreeStructure:
        """The pointers of the current masks (rebuilt when the masks change)."""
        key = (self.masks.data_ptr(), self.masks._version, self.masks.device)
        if self._structure is None or self._structure[0] != key:
            self._structure = (key, OctreeStructure.from_masks(
                self.masks, self.config.depth, self.config.leaves))
        return self._structure[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_structure"] = None  # rebuilt on demand (deep copies, pickled workers)
        return state

    # --- queries ----------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return 1 << self.config.depth

    def cells_of(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Lattice cells [N, 3] (int64) of points ``x`` [N, 3] and whether each point lies
        in the box [N]."""
        lo, hi = self.aabb[0], self.aabb[1]
        u = (x - lo) / (hi - lo)
        inside = ((u >= 0) & (u <= 1)).all(-1)
        cells = (u * self.resolution).floor().clamp(0, self.resolution - 1).long()
        return cells, inside

    def leaf_index(self, x: Tensor) -> Tensor:
        """Index [N] of the leaf holding each point ``x`` [N, 3] (-1: empty space)."""
        cells, inside = self.cells_of(x.detach())
        idx = self.structure().lookup(cells)
        return torch.where(inside, idx, torch.full_like(idx, -1))

    def leaf_density(self, idx: Tensor) -> Tensor:
        """``relu(sigma)`` of leaves ``idx`` [N] (>= 0) -> [N]."""
        return torch.relu(self.sigma[idx])

    def leaf_color(self, idx: Tensor, d: Tensor) -> Tensor:
        """Colour [N, 3] of leaves ``idx`` [N] (>= 0) seen along unit directions ``d``."""
        basis = spherical_harmonics(d)
        if self.config.appearance == "sh":
            k = sh_count(self.config.sh_degree)
            coeffs = self.sh[:, idx].T.reshape(-1, 3, k)
            return torch.sigmoid((coeffs * basis[:, None, :k]).sum(-1))
        feats = self.features[:, idx].T
        return torch.sigmoid(self.decoder(torch.cat((feats, basis), -1)))

    def density(self, x: Tensor) -> Tensor:
        idx = self.leaf_index(x)
        hit = idx >= 0
        out = torch.zeros(x.shape[0], device=x.device, dtype=self.sigma.dtype)
        return out.masked_scatter(hit, self.leaf_density(idx[hit]))

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        idx = self.leaf_index(x)
        hit = idx >= 0
        out = torch.zeros(x.shape[0], 3, device=x.device, dtype=self.sigma.dtype)
        return out.masked_scatter(hit[:, None].expand_as(out),
                                  self.leaf_color(idx[hit], d[hit]))

    # --- hooks ------------------------------------------------------------------------------
    def render_settings(self, cfg: TrainConfig, step: int | None = None) -> dict[str, Any]:
        """Exact traversal of the leaves (no step: each leaf a ray crosses is one segment)."""
        return {"sampler": "octree"}

    @classmethod
    def finetune_rates(cls) -> dict[str, float]:
        # Baked leaves start from point samples, not from a minimum of the image loss, and a
        # leaf is crossed by few of a step's rays: they need the larger steps (the rate of
        # every measured octree pipeline in benchmarks/RESULTS.md).
        return {"grid": 1e-2, "net": 1e-4}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        # By name, not ``self.sigma``: under fine-tuning's parametrizations (codebooks, masks)
        # the attribute is a computed tensor, and the leaves to train sit beneath it.
        leaf_data = ("sigma", "sh" if self.config.appearance == "sh" else "features")
        groups: dict[str, list[nn.Parameter]] = {"grid": [], "net": []}
        for name, p in self.named_parameters():
            base = name.removeprefix("parametrizations.").split(".")[0]
            groups["grid" if base in leaf_data else "net"].append(p)
        return groups

    def feature_grids(self) -> dict[str, FeatureGrid]:
        """The leaf colour data: one vector per leaf along axis 0; leaves in Morton order are
        not lattice neighbours (no mask dilation)."""
        name = "sh" if self.config.appearance == "sh" else "features"
        return {name: FeatureGrid(axis=0, spatial=False)}

    def read_grid(self, name: str, grid: Tensor, x: Tensor) -> Tensor:
        if name not in self.feature_grids():
            return super().read_grid(name, grid, x)
        idx = self.leaf_index(x)
        hit = idx >= 0
        flat = grid.reshape(-1)
        return torch.where(hit, flat[idx.clamp(min=0)], torch.zeros_like(flat[:1]))

    def grid_shape(self) -> tuple[int, int, int]:
        n = self.resolution
        return (n, n, n)


def leaf_size(aabb: Tensor, depth: int) -> float:
    """Edge of a leaf along the box's shortest axis, in field units."""
    return float((aabb[1] - aabb[0]).min()) / (1 << depth)


def depth_for(resolution: int) -> int:
    """Levels whose lattice has at least ``resolution`` cells per axis (capped)."""
    return min(MAX_DEPTH, max(1, math.ceil(math.log2(max(resolution, 2)))))
