//! Maps bounded in size for caches that hostile input can feed (distinct tokens, keys,
//! questions): full, they shed stale entries first, then an arbitrary tenth.

use std::collections::HashMap;
use std::hash::Hash;

/// Makes room for one more entry in a map bounded to `capacity`: stale entries go first,
/// then an arbitrary tenth, so a flood of distinct keys can neither grow the map nor
/// flush it entirely.
pub fn make_room<K: Eq + Hash + Clone, V>(map: &mut HashMap<K, V>, capacity: usize, stale: impl Fn(&V) -> bool) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, v| !stale(v));
    if map.len() >= capacity {
        let evict: Vec<K> = map.keys().take(capacity / 10 + 1).cloned().collect();
        for k in evict {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_entries_go_first_then_a_tenth() {
        let mut map: HashMap<u32, bool> = (0..100).map(|k| (k, k % 2 == 0)).collect();
        make_room(&mut map, 100, |stale| *stale);
        assert_eq!(map.len(), 50, "the stale half went, nothing else");
        let mut fresh: HashMap<u32, bool> = (0..100).map(|k| (k, false)).collect();
        make_room(&mut fresh, 100, |stale| *stale);
        assert_eq!(fresh.len(), 89, "nothing stale: an arbitrary tenth (and one) went");
        make_room(&mut fresh, 100, |stale| *stale);
        assert_eq!(fresh.len(), 89, "below capacity: untouched");
    }
}
