"""Mirror selection: filter -> tier -> band -> capacity-weighted pick. Pure functions.

Selection runs in two steps so that the hot path stays cheap:

1. :mod:`.ranking`: :func:`rank_mirrors` depends only on the client and the request options.
   It gives every mirror either an :class:`~mirrorhub.domain.Exclusion` that holds for any
   file (disabled, down, a restriction, ...) or a place in the ranking by (tier, distance).
   Its result, a :class:`Profile`, is cached per client profile by the index.
2. :mod:`.decision`: :func:`choose` walks that ranking for one file, skips mirrors that are
   not fresh for it, forms the band of near mirrors within the best tier, and picks one at
   random weighted by capacity and held back by load. The same function makes the 302
   (``full=False``: stops once it has enough) and the mirror list / JSON views
   (``full=True``: every mirror classified). :mod:`.fast_path` makes the 302's choice
   without building objects (:func:`fast_choose`, :func:`band_walk`, :func:`pick_in_band`).
"""

from mirrorhub.selection.decision import TOLERABLE, choose
from mirrorhub.selection.fast_path import (
    FastBand,
    band_walk,
    fast_choose,
    load_factors,
    pick_in_band,
)
from mirrorhub.selection.ranking import (
    FURTHER_CANDIDATES,
    KIND_MISSING,
    KIND_OUTDATED,
    SPILL_CANDIDATES,
    Band,
    FileFacts,
    MirrorSlot,
    Profile,
    Ranked,
    file_reason,
    make_profile,
    make_slot,
    rank_mirrors,
)

__all__ = [
    "FURTHER_CANDIDATES",
    "KIND_MISSING",
    "KIND_OUTDATED",
    "SPILL_CANDIDATES",
    "TOLERABLE",
    "Band",
    "FastBand",
    "FileFacts",
    "MirrorSlot",
    "Profile",
    "Ranked",
    "band_walk",
    "choose",
    "fast_choose",
    "file_reason",
    "load_factors",
    "make_profile",
    "make_slot",
    "pick_in_band",
    "rank_mirrors",
]
