//! [`Pruned`]: a list of entries that die on their own (a weak reference whose target was
//! dropped, a cell nobody else holds, a run that ended), whose dead entries are dropped in
//! batches rather than on every push.

/// A list whose dead entries are dropped when it has doubled since the last pruning (and
/// holds at least 8). A push is O(1) amortised: a pruning on every push is quadratic in the
/// entries alive at once (20,000 nested restarters spent 63% of their start in it). The
/// list is never longer than twice the entries alive at the last pruning, or 8, so its
/// memory follows what is live, not what ever was. Readers skip dead entries themselves.
#[derive(Debug)]
pub(crate) struct Pruned<T> {
    list: Vec<T>,
    /// How many entries the last pruning left.
    kept: usize,
}

impl<T> Default for Pruned<T> {
    fn default() -> Self {
        Pruned {
            list: Vec::new(),
            kept: 0,
        }
    }
}

impl<T> Pruned<T> {
    /// Adds `item`, first dropping the entries `alive` says are dead if the list has
    /// doubled since the last pruning. Entries keep their order.
    pub(crate) fn push(&mut self, item: T, alive: impl FnMut(&T) -> bool) {
        if self.list.len() >= (2 * self.kept).max(8) {
            self.list.retain(alive);
            self.kept = self.list.len();
        }
        self.list.push(item);
    }

    /// The entries, dead ones among them, in the order they were pushed.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.list.iter()
    }

    /// Takes every entry, leaving the list empty.
    pub(crate) fn take(&mut self) -> Vec<T> {
        self.kept = 0;
        std::mem::take(&mut self.list)
    }

    /// How many entries the list holds, dead ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Pruned;

    /// Entries that all stay alive are looked at under twice each over all the pushes
    /// (a pruning at 8, 16, 32, ... entries), not once per push per entry; dead ones never
    /// make the list longer than 8; the live ones keep their order.
    #[test]
    fn pushes_are_amortised_and_the_list_follows_what_is_alive() {
        // Fewer under Miri, where each push is slow; the bounds hold at any size.
        const N: usize = if cfg!(miri) { 1_000 } else { 100_000 };
        let mut alive = Pruned::default();
        let mut looks = 0;
        for i in 0..N {
            alive.push(i, |_| {
                looks += 1;
                true
            });
        }
        assert_eq!(alive.len(), N);
        assert!(looks < 2 * N, "{looks} looks for {N} pushes");
        assert!(alive.iter().copied().eq(0..N));

        let mut dead = Pruned::default();
        for i in 0..N {
            dead.push(i, |_| false);
            assert!(dead.len() <= 8, "{} entries at push {i}", dead.len());
        }

        // Every third alive: the survivors in order, and the list within twice them.
        let mut some = Pruned::default();
        for i in 0..N {
            some.push(i, |e| e % 3 == 0);
        }
        let survivors = some.iter().copied().filter(|e| e % 3 == 0);
        assert!(survivors.eq((0..N).step_by(3)));
        assert!(some.len() <= 2 * N.div_ceil(3) + 8, "{}", some.len());
        let held = some.len();
        assert_eq!(some.take().len(), held);
        assert_eq!(some.len(), 0);
    }
}
