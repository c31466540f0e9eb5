"""How a kernel keeps Python's cyclic garbage collector from rescanning its vnets.

CPython (3.11, Modules/gcmodule.c) runs a full collection whenever the objects that
survived into the oldest generation grew by a quarter since the last one, and each full
collection walks every tracked object. The vnets of a big topology are a dozen tracked
objects each and live for the whole run: with vnets made one `Kernel.create()` at a time
the collector walked every vnet made so far again and again, more work than making them,
and the creation rate fell as vnets accumulated. Two tools here:

- `collector_paused()`: no collection inside a block (bulk creation: `create_many`, the
  emulator's build); the new objects are walked once, by the next collection.
- `CollectorPolicy`: each kernel's policy for vnets made one by one. Once `batch` vnets
  were made since the last freeze, it collects (everything the first time, so no garbage
  of the program's is frozen; then the young generations, which hold the batch's new
  objects) and calls `gc.freeze()`: every object then alive moves to the permanent
  generation, which collections never walk. The collections after walk only what was
  made since, so creation stays flat. Destroying vnets thaws: a destroyed vnet's
  objects are freed by reference counting if nothing cyclic remains, but its cycles (the
  vnet and its protocol states refer to each other) are only found once unfrozen, so
  when half of the vnets frozen since the policy engaged are gone, `gc.unfreeze()` hands
  everything back to the collector (amortised: the full collection that follows walks
  what is left, at most twice what was destroyed).

Trade-offs (docs/internals.md): `gc.freeze()` is process-wide, so the objects of the
whole program alive at a freeze are frozen with the vnets, and any of them that later
becomes cyclic garbage stays in memory until the kernel thaws (its vnets destroyed) or
the program calls `gc.unfreeze()`, as does cyclic garbage that reached the oldest
generation since the previous freeze; a kernel dropped without destroying its vnets
stays in memory the same way. The policy never thaws what it did not freeze: it engages only
while nothing else is frozen (a program that freezes its own objects, or a second kernel
while a first one holds frozen vnets, keeps the collector's default behaviour; it looks
again only at twice as many vnets each time, as `gc.get_freeze_count()` walks every
frozen object), and does nothing while the collector is disabled. `batch = 0` turns it
off for a kernel.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_BATCH = 4096
"""Vnets made one by one between two freezes. Below this many vnets in a kernel nothing is
frozen (a test's or a small experiment's collector behaves as Python's default); each
batch costs one collection of the young generations (a walk of its about 65,000 new
objects, besides the collector's own young collections)."""


@contextmanager
def collector_paused() -> Iterator[bool]:
    """Keep Python's cyclic garbage collector from running inside the block, restoring
    it (if it was on) after: for building a topology in bulk. Yields whether it was on
    (for `CollectorPolicy.settle` at the block's end).

    Every vnet is a few objects the collector tracks (a dozen when idle) and all of them
    live as long as the topology: while thousands are made, each full collection (one
    whenever the tracked objects grew by a quarter) walks every vnet made so far, which
    cost more than making them. Paused, the new objects are walked once, by the first
    collection after the block. Nothing made here is garbage, so nothing is held back.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield was_on
    finally:
        if was_on:
            gc.enable()


class CollectorPolicy:
    """One kernel's freezing of its long-lived vnets in batches (see the module's doc).

    `unfrozen`: vnets made (net of destroyed ones) since the last freeze; `frozen`: vnets
    frozen since the policy engaged; `dead`: how many of those were destroyed since.
    """

    __slots__ = ("batch", "dead", "freezes", "frozen", "refused", "thaws", "unfrozen")

    def __init__(self, batch: int = DEFAULT_BATCH) -> None:
        self.batch = batch
        self.unfrozen = 0
        self.frozen = 0
        self.dead = 0
        # while others' objects are frozen: how many unfrozen vnets the last refusal saw.
        # The next look is at twice as many, as counting the frozen objects
        # (gc.get_freeze_count) walks them all
        self.refused = 0
        self.freezes = 0  # how many times this kernel froze and thawed (for tests, benches)
        self.thaws = 0

    @property
    def engaged(self) -> bool:
        """Whether objects frozen by this kernel may be in the permanent generation."""
        return self.frozen > 0

    def created(self) -> None:
        """A vnet was made (Kernel.create)."""
        self.unfrozen += 1
        if self.unfrozen >= self.batch > 0:
            self.settle()

    def settle(self, collector_on: bool | None = None) -> None:
        """Freeze now if a batch is due and the collector is on (`collector_on`: whether it
        was before a `collector_paused` block this is called at the end of; default: as
        it is). `Kernel.create_many` and the emulator's build call it at the end of their
        paused block: the collection before freezing is then the only walk of their new
        objects (called after the block, an automatic collection of the young generation
        would walk them first)."""
        if collector_on is None:
            collector_on = gc.isenabled()
        if self.unfrozen < self.batch or self.batch <= 0 or not collector_on:
            return
        if not self.engaged:
            if self.unfrozen < 2 * self.refused:
                return
            if gc.get_freeze_count():  # nothing frozen by us: so someone else's objects,
                self.refused = self.unfrozen  # which thawing ours would thaw too
                return
            self.refused = 0
        # the first freeze collects everything, so no garbage of the program's is frozen;
        # later ones only the young generations (the batch's new objects, once): what is
        # older than the last freeze was collected then, and only what became garbage
        # after reaching the oldest generation since would be frozen with the rest
        gc.collect(1 if self.engaged else 2)
        gc.freeze()
        self.frozen += self.unfrozen
        self.unfrozen = 0
        self.freezes += 1

    def destroyed(self) -> None:
        """A vnet was destroyed (Kernel.destroy)."""
        if not self.engaged:
            self.unfrozen = max(0, self.unfrozen - 1)
            return
        self.dead += 1
        if 2 * self.dead >= self.frozen:
            self.thaw()

    def thaw(self) -> None:
        """Hand every frozen object back to the collector (the cycles of destroyed vnets
        among them are then collected) and disengage."""
        if not self.engaged:
            return
        gc.unfreeze()
        self.unfrozen += self.frozen - self.dead
        self.frozen = self.dead = 0
        self.thaws += 1
