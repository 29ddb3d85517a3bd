"""ANI's AEV from a neighbour list, its radial and angular terms summed in chunks.

torchani's pure-PyTorch AEV (``pyaev``, the one a CPU has) builds a (triplets, 32) tensor of angular terms, a
(pairs, 16) one of radial terms, and several more of those sizes in its autograd graph. In a condensed box the
triplets within the 3.5 Å angular cutoff outnumber the atoms 80 to 1, so those tensors are most of an ANI model's
time and memory (issue 22, benchmarks/results/student_speed.md); the teacher ensemble shares one AEV, its
single-network student has little else.

:class:`ChunkedSum` computes the same sums chunk by chunk, each chunk's tensors small enough to stay in a core's
cache, and keeps only its inputs: the pairs' features (distances; for the angular terms also cutoff functions and
unit vectors) and integer indices. Its backward recomputes each chunk's terms under autograd and does the chain rule
of the one step it does by hand, ``out[row] += left ⊗ right``, as two contractions; every other derivative comes
from autograd (and :class:`PowerOfTwo`'s, of ``x ** 32``, from its saved result). When the backward is itself
differentiated (forces in a training loss, Hessian-vector products), the recomputation stays attached to the graph,
so higher derivatives are exact too.

The angular terms are torchani's ``ANIAngular`` (eq. 4 of the ANI paper) without ``acos``:
``cos(acos(0.95 c) - θs) = 0.95 c cos θs + sqrt(1 - (0.95 c)²) sin θs``, the same numbers to float32 rounding.
What a term needs of a pair that does not depend on the other pair (its cutoff function, its unit vector) is
computed once per pair, not once per term: each pair within the angular cutoff of a condensed box is in ~25 terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torchani.aev import AEVComputer
from torchani.aev._terms import ANIAngular, ANIRadial
from torchani.neighbors import Neighbors, discard_outside_cutoff

# Terms per chunk, within these bounds. Larger chunks are faster (each costs ~0.3 ms of fixed overhead, one CPU
# thread) but hold more memory at once (~400 bytes per angular term in the backward): a 4096-term chunk is ~9 KiB per
# atom of a 205-atom box; 16384 was 5-15 % faster than 4096 on a 3,791-atom box, and ~8 % faster than torchani's own
# code on training batches of molecules, where 1024-term chunks were 8 % slower than it.
MIN_CHUNK, MAX_CHUNK = 1024, 16384

Factors = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


class Terms(NamedTuple):
    """What :class:`ChunkedSum` adds up: n terms, each made from k pairs of a neighbour list, each added to m rows."""

    pairs: torch.Tensor  # (k, n) the pairs of a term (radial: k = 1; angular: k = 2, two neighbours of an atom)
    signs: torch.Tensor | None  # (n,) ±1 in the features' dtype: turns the product of a term's pair vectors (first
    # minus second atom) into that of its vectors from the central atom; None where the terms do not use them (radial)
    rows: torch.Tensor  # (m, n) the output rows a term adds to (radial: m = 2, one for each atom of its pair)


class ChunkedSum(torch.autograd.Function):
    """``out[terms.rows[:, t]] += left(t) ⊗ right(t)`` for every term t, ``out`` of ``shape`` (rows, features),
    where ``factors(features (F, k, chunk), signs (chunk,) or None)`` gives a chunk's two factors, (a, chunk) and
    (s, chunk), from the features of its pairs (columns of ``features`` (F, pairs)) and its signs; ``right`` None
    means 1. Chunks of ``MIN_CHUNK`` to ``MAX_CHUNK`` terms (the last may be smaller), up to ``min_chunks`` of them
    where that bound allows (memory). Inside, terms run along the last axis of every tensor, so that elementwise
    products of factors with a few rows each are long contiguous loops (the outer product 5x faster than with terms
    first); ``out`` is summed as (features, rows) and transposed once at the end, its gradient once at the start."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, terms: Terms, shape: tuple[int, int], factors: Factors,
                min_chunks: int) -> torch.Tensor:
        ctx.save_for_backward(features, *terms)
        ctx.factors, ctx.min_chunks = factors, min_chunks
        out = features.new_zeros(shape[::-1])
        for part in _chunks(terms.pairs.shape[1], min_chunks):
            _add_chunk(out, features, terms, part, factors)
        return out.T.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        features, *terms = ctx.saved_tensors
        terms = Terms(*terms)
        create_graph = torch.is_grad_enabled()  # the backward is being differentiated
        if not create_graph:
            features = features.detach()
        grad = grad.T.contiguous()  # (gathers from a strided one, e.g. a slice of the AEV's gradient, were 9x slower)
        total = torch.zeros_like(features)
        for part in _chunks(terms.pairs.shape[1], ctx.min_chunks):
            chunk = _chunk_grad(grad, features, terms, part, ctx.factors, create_graph)
            # (in place: the chunks' gradients are never all kept)
            total.index_add_(1, terms.pairs[:, part].reshape(-1), chunk.flatten(1))
        return total, None, None, None, None


# One chunk per function call, so that its tensors (and autograd graph) are freed before the next chunk's.
def _add_chunk(out: torch.Tensor, features: torch.Tensor, terms: Terms, part: slice, factors: Factors) -> None:
    left, right = factors(_gathered(features, terms.pairs[:, part]), _signs(terms, part))
    products = left if right is None else (left[:, None, :] * right[None, :, :]).flatten(0, 1)
    for rows in terms.rows[:, part]:
        out.index_add_(1, rows, products)


def _chunk_grad(grad: torch.Tensor, features: torch.Tensor, terms: Terms, part: slice, factors: Factors,
                create_graph: bool) -> torch.Tensor:
    """Gradient of ``(grad * out).sum()`` with respect to the chunk's gathered features (F, k, chunk)."""
    with torch.enable_grad():
        gathered = _gathered(features, terms.pairs[:, part])
        if not create_graph:
            gathered.requires_grad_()
        left, right = factors(gathered, _signs(terms, part))
        g = grad.index_select(1, terms.rows[0, part])
        for rows in terms.rows[1:, part]:
            g = g + grad.index_select(1, rows)
        if right is None:
            return torch.autograd.grad(left, gathered, g, create_graph=create_graph)[0]
        g = g.view(left.shape[0], right.shape[0], -1)
        grad_left = torch.linalg.vecdot(g, right[None], dim=1)
        grad_right = g[0] * left[0]  # in place, one row at a time
        for a in range(1, left.shape[0]):
            grad_right.addcmul_(g[a], left[a])
        del g
        return torch.autograd.grad((left, right), gathered, (grad_left, grad_right), create_graph=create_graph)[0]


def _signs(terms: Terms, part: slice) -> torch.Tensor | None:
    return None if terms.signs is None else terms.signs[part]


def _chunks(n: int, min_chunks: int) -> list[slice]:
    size = max(MIN_CHUNK, min(MAX_CHUNK, -(-n // min_chunks)))
    return [slice(start, start + size) for start in range(0, n, size)]


def _gathered(features: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(F, k, t) features of terms' pairs (one index_select: faster than indexing, and than one per feature)."""
    return features.index_select(1, pairs.reshape(-1)).view(features.shape[0], *pairs.shape)


def gaussians(distances: torch.Tensor, eta: float, shifts: torch.Tensor) -> torch.Tensor:
    """``exp(-eta (distances - shifts)²)`` (shifts, t), never below e times the dtype's smallest normal number
    (3.2e-38 in float32): where the exact value is subnormal or near it, exp took 5-12x as long (ANI-1x's radial
    terms of pairs 2.3-5.2 Å apart, float32, one CPU thread)."""
    exponent = -eta * (distances - shifts[:, None]) ** 2
    return torch.exp(_at_least(exponent, _smallest_exponent(exponent.dtype)))


def _smallest_exponent(dtype: torch.dtype) -> float:
    return math.log(torch.finfo(dtype).tiny) + 1


def _at_least(x: torch.Tensor, floor: float) -> torch.Tensor:
    """``x`` raised to ``floor`` where below, with the gradient of ``x`` itself: it only matters where exp or pow of
    the raised values are below 3.2e-38, and costs less than clamp's gradient (1.5x faster)."""
    raised = x.detach().clamp(min=floor)
    return x + (raised - x.detach())


def radial_factors(radial: ANIRadial) -> Factors:
    """torchani's ``ANIRadial`` terms (eq. 3 of the ANI paper, NeuroChem's 0.25) of one pair each, from its
    distance (features: (1, 1, t))."""
    eta = float(radial.eta)

    def factors(features: torch.Tensor, signs: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        distances = features[0, 0]
        cutoff = radial.cutoff_fn(distances, radial.cutoff)
        return 0.25 * cutoff * gaussians(distances, eta, radial.shifts), None

    return factors


def angular_pair_features(angular: ANIAngular, distances: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """(5, pairs): each pair's distance, cutoff function and unit vector, the features :func:`angular_factors` takes."""
    cutoff = angular.cutoff_fn(distances, angular.cutoff)
    return torch.cat([distances[None], cutoff[None], (vectors / distances.clamp(min=1e-10)[:, None]).T])


def angular_factors(angular: ANIAngular) -> Factors:
    """(radial (shifts, t), angular (sections, t)) of triplets, whose outer product is torchani's terms, from the
    :func:`angular_pair_features` of their two pairs (features: (5, 2, t))."""
    eta, zeta, shifts = float(angular.eta), float(angular.zeta), angular.shifts
    power = _power(zeta)
    # 2 ((1 + cos(θ - θs)) / 2)^ζ = (c (1 + cos θ cos θs + sin θ sin θs))^ζ with c = 2^(1/ζ) / 2: one addmm, which
    # keeps only (2, t), and torchani's factor 2 inside the power
    c = 2 ** (1 / zeta) / 2
    half = torch.full_like(angular.sections, c)[:, None]
    rotation = c * torch.stack([torch.cos(angular.sections), torch.sin(angular.sections)], 1)

    def factors(features: torch.Tensor, signs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert signs is not None
        # one unbind: its backward is one stack, where indexing's would fill a (5, 2, t) tensor per index
        d0, d1, cut0, cut1, x0, x1, y0, y1, z0, z1 = features.flatten(0, 1).unbind(0)
        # the angle between the vectors from the central atom: the pairs' vectors turned by their signs; 0.95 is
        # torchani's guard against acos(±1)
        cos = (x0 * x1 + y0 * y1 + z0 * z1) * signs
        cos = 0.95 * cos
        base = torch.addmm(half, rotation, torch.stack([cos, torch.sqrt(1 - cos * cos)]))
        angle_term = power(_at_least(base, math.exp(_smallest_exponent(base.dtype) / zeta)))  # as in gaussians
        # at the mean distance: exp(-η ((d0 + d1) / 2 - s)²) = exp(-η/4 (d0 + d1 - 2 s)²)
        radial_term = gaussians(d0 + d1, eta / 4, 2 * shifts)
        return cut0 * cut1 * radial_term, angle_term

    return factors


def _power(exponent: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x ** exponent`` of positive ``x`` (the floored base of the angular terms); by :class:`PowerOfTwo` where the
    exponent is 2, 4, ..., 64 (ANI's 32)."""
    squarings = math.log2(exponent)
    if squarings != int(squarings) or not 1 <= squarings <= 6:
        return lambda x: x.pow(exponent)
    return lambda x: PowerOfTwo.apply(x, int(squarings))


class PowerOfTwo(torch.autograd.Function):
    """``x ** (2 ** squarings)`` of positive ``x`` by repeated squaring, its derivative ``exponent * y / x`` from
    the saved input and result: with its derivative 1.7x faster than ``pow`` (131k values, one CPU thread), and
    unlike autograd of the squarings it keeps no intermediate power (they were 2.5 KiB per atom of a 205-atom box). The backward is
    made of differentiable operations, so second derivatives are exact too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, squarings: int) -> torch.Tensor:
        y = x
        for _ in range(squarings):
            y = y * y
        ctx.save_for_backward(x, y)
        ctx.exponent = 2**squarings
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, y = ctx.saved_tensors
        return grad * (ctx.exponent * y / x), None


def radial_terms(neighbors: Neighbors, flat_elements: torch.Tensor, n_species: int) -> Terms:
    """One term per pair, added to each of its atoms' row for the other atom's element."""
    first, second = neighbors.indices
    return Terms(torch.arange(first.shape[0], device=first.device)[None], None,
                 torch.stack([first * n_species + flat_elements[second], second * n_species + flat_elements[first]]))


def angular_terms(close: Neighbors, flat_elements: torch.Tensor, pair_index: torch.Tensor, n_pairs: int) -> Terms:
    """One term per triplet, i.e. per two pairs of ``close`` that share a central atom (torchani's
    ``neighbors_to_triples`` without its (atoms, max neighbours²) table), added to the central atom's row for the
    side atoms' species pair ``pair_index[a, b]`` (0 to ``n_pairs - 1``)."""
    n_close = close.indices.shape[1]
    ends = close.indices.reshape(-1)  # slot k * n_close + p holds end k of pair p
    order = torch.argsort(ends, stable=True)
    centres, counts = torch.unique_consecutive(_take(ends, order), return_counts=True)
    sizes = counts * (counts - 1) // 2  # pairs of neighbours of each central atom
    centre = torch.repeat_interleave(sizes)  # (triplets,) which central atom
    offset = torch.arange(centre.shape[0], device=ends.device) - _take(torch.cumsum(sizes, 0) - sizes, centre)
    max_count = int(counts.max()) if counts.numel() else 0
    # row-major pairs (i > j): the first c (c - 1) / 2 of them pair up a central atom's first c neighbours
    local = torch.tril_indices(max_count, max_count, -1, device=ends.device).index_select(1, offset)
    # (2, triplets): the slots of the central atom in each triplet's two pairs
    slot = _take(order, local + _take(torch.cumsum(counts, 0) - counts, centre))
    # per slot (gathers, cheaper than integer division): its pair, its sign, the element at the pair's other end
    pair_of = torch.arange(n_close, device=ends.device).repeat(2)
    sign_of = torch.ones(2 * n_close, dtype=close.distances.dtype, device=ends.device)
    sign_of[n_close:] = -1
    side_element = _take(_take(flat_elements, close.indices.flip(0).reshape(-1)), slot)
    bucket = _take(centres, centre) * n_pairs + _take(pair_index.reshape(-1),
                                                      side_element[0] * pair_index.shape[1] + side_element[1])
    signs = _take(sign_of, slot)
    return Terms(_take(pair_of, slot), signs[0] * signs[1], bucket[None])


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 1-d ``values`` by index_select: several times faster than indexing with a 2-d index
    on a CPU."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


def aev_from_neighbors(computer: AEVComputer, elem_idxs: torch.Tensor, neighbors: Neighbors,
                       min_chunks: int = 1) -> torch.Tensor:
    """(molecules, atoms, aev_dim) AEVs of torchani's ``computer`` (its terms, cutoffs and feature order) by
    :class:`ChunkedSum`; ``neighbors`` index ``elem_idxs.view(-1)``, each pair once, vectors first minus second.
    ``min_chunks``: split each sum into up to that many chunks of at least ``MIN_CHUNK`` terms (a single system,
    whose memory per atom counts)."""
    n_molecules, n_atoms = elem_idxs.shape
    flat_elements = elem_idxs.view(-1)
    n_species, n_pairs = computer.num_species, computer.num_species_pairs
    radial = ChunkedSum.apply(neighbors.distances[None], radial_terms(neighbors, flat_elements, n_species),
                              (n_molecules * n_atoms * n_species, computer.radial.num_feats),
                              radial_factors(computer.radial), min_chunks)
    close = discard_outside_cutoff(neighbors, computer.angular.cutoff)
    angular = ChunkedSum.apply(angular_pair_features(computer.angular, close.distances, close.diff_vectors),
                               angular_terms(close, flat_elements, computer.triu_index, n_pairs),
                               (n_molecules * n_atoms * n_pairs, computer.angular.num_feats),
                               angular_factors(computer.angular), min_chunks)
    return torch.cat([radial.view(n_molecules, n_atoms, -1), angular.view(n_molecules, n_atoms, -1)], dim=-1)
