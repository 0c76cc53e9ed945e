"""One allocator for every budgeted choice a pass makes: bits per tensor, rank per layer.

A *unit* (a tensor, a layer) has a list of *options* (4 bits, rank 12, ...), each with a rate
``R`` (bytes in the file, or weights) and a distortion ``D`` (an importance-weighted squared
error). Distortions are assumed additive over units, so the problem is

    minimise  sum_u D_u(o_u)   subject to   sum_u R_u(o_u) <= B,

one option ``o_u`` per unit. Its Lagrangian relaxation decouples it: for a multiplier
``lam >= 0`` each unit alone takes ``argmin_o D_u(o) + lam * R_u(o)``, and the total rate falls
as ``lam`` grows. Only the options on the lower convex hull of a unit's (R, D) points can ever
be chosen, and the choice changes only where ``lam`` equals one of the hull's slopes
``-dD/dR``, so bisection over those slopes finds the smallest ``lam`` whose allocation fits
``B`` exactly (no tolerance). That allocation is optimal for its own total rate (Everett 1963;
Shoham & Gersho, "Efficient bit allocation for an arbitrary set of quantizers", IEEE Trans.
ASSP 36(9), 1988), but may leave some of ``B`` unspent, since the budget can fall between two
hull points; a greedy fix-up then spends the rest, each step taking the upgrade of one unit
(any option, on the hull or not) with the most distortion saved per byte that still fits.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from nerfzip.errors import NerfzipError


@dataclass(frozen=True)
class Option:
    """One way to code a unit."""

    value: Hashable
    """What the pass applies (bits, a rank)."""
    rate: float
    """Its cost (bytes in the file, or weights), >= 0."""
    distortion: float
    """Its error, in the same currency for every unit (>= 0)."""


@dataclass(frozen=True)
class Unit:
    """A tensor, a layer or a block of one: the options one choice is made from."""

    name: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Allocation:
    """The chosen option of each unit (by name), and the totals."""

    choice: dict[str, Option]
    rate: float
    distortion: float
    lmbda: float
    """The Lagrange multiplier of the hull allocation before the fix-up (distortion per unit
    of rate at the margin)."""


def lower_hull(options: Sequence[Option]) -> list[Option]:
    """The options on the lower-left convex hull of the (rate, distortion) points, by rising
    rate (falling distortion): the only ones ``argmin D + lam R`` returns for some ``lam``."""
    pts = sorted(options, key=lambda o: (o.rate, o.distortion))
    front: list[Option] = []
    for o in pts:  # Pareto front first: each kept point is cheaper or better than the rest
        if not front or o.distortion < front[-1].distortion:
            front.append(o)
    hull: list[Option] = []
    for o in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the chord a -> o: drop it
            if (b.distortion - a.distortion) * (o.rate - a.rate) >= \
                    (o.distortion - a.distortion) * (b.rate - a.rate):
                hull.pop()
            else:
                break
        hull.append(o)
    return hull


def slopes(hull: Sequence[Option]) -> list[float]:
    """``-dD/dR`` between consecutive hull points (falling: the hull is convex)."""
    return [(a.distortion - b.distortion) / (b.rate - a.rate) for a, b in zip(hull, hull[1:])]


def pick(hull: Sequence[Option], lmbda: float) -> Option:
    """``argmin_o D(o) + lmbda R(o)`` on a hull: the cheapest point where the next segment
    saves less than ``lmbda`` per unit of rate."""
    k = 0
    for s in slopes(hull):
        if s <= lmbda:
            break
        k += 1
    return hull[k]


def allocate(units: Sequence[Unit], budget: float) -> Allocation:
    """The options of least total distortion whose total rate is at most ``budget``
    (Lagrangian on the convex hulls, then greedy fix-up; see the module docstring). Raises
    ``NerfzipError`` when even the cheapest options exceed the budget."""
    if not units:
        raise NerfzipError("allocation: no units to allocate")
    for u in units:
        if not u.options:
            raise NerfzipError(f"allocation: unit {u.name} has no options")
        if any(o.rate < 0 or o.distortion < 0 or not math.isfinite(o.rate + o.distortion)
               for o in u.options):
            raise NerfzipError(f"allocation: unit {u.name} has a negative or infinite option")
    floor = sum(min(o.rate for o in u.options) for u in units)
    if floor > budget:
        raise NerfzipError(f"budget {budget:g} is below the smallest possible size "
                           f"({floor:g}: every unit at its cheapest option)")
    hulls = {u.name: lower_hull(u.options) for u in units}
    lmbda = hull_multiplier(hulls, budget)
    choice = {name: pick(h, lmbda) for name, h in hulls.items()}
    choice = fix_up(units, choice, budget)
    return Allocation(choice, sum(o.rate for o in choice.values()),
                      sum(o.distortion for o in choice.values()), lmbda)


def hull_multiplier(hulls: dict[str, list[Option]], budget: float) -> float:
    """The smallest multiplier among the hulls' breakpoints (and 0) whose allocation's rate
    is at most ``budget``: bisection over the sorted slopes (the rate falls as it grows)."""
    candidates = sorted({0.0} | {s for h in hulls.values() for s in slopes(h)})

    def rate(lmbda: float) -> float:
        return sum(pick(h, lmbda).rate for h in hulls.values())

    lo, hi = 0, len(candidates) - 1  # rate(candidates[-1]) is the floor: always fits
    while lo < hi:
        mid = (lo + hi) // 2
        if rate(candidates[mid]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


def fix_up(units: Sequence[Unit], choice: dict[str, Option], budget: float
           ) -> dict[str, Option]:
    """Greedy: while some unit has an option of lower distortion that fits what is left of
    the budget, switch the one that saves the most distortion per unit of rate added (free
    or cheaper improvements first)."""
    choice = dict(choice)
    spent = sum(o.rate for o in choice.values())
    while True:
        best, best_gain = None, 0.0
        for u in units:
            cur = choice[u.name]
            for o in u.options:
                saved, added = cur.distortion - o.distortion, o.rate - cur.rate
                if saved <= 0 or spent + added > budget:
                    continue
                gain = math.inf if added <= 0 else saved / added
                if best is None or gain > best_gain:
                    best, best_gain = (u.name, o), gain
        if best is None:
            return choice
        spent += best[1].rate - choice[best[0]].rate
        choice[best[0]] = best[1]
