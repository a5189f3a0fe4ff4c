//! A hash table of entries found by an id that each entry carries itself. A `HashMap` keyed by
//! the id would store it twice per slot (16 bytes of every slot of the fleet index, one per
//! enrolled device); this stores the entry alone. It owns nothing but the table: what an entry
//! is, and what its id means, is the caller's.

use hashbrown::hash_table::{Entry, HashTable};
use std::hash::{BuildHasher, RandomState};

/// What an entry is found by.
pub(super) trait Keyed {
    fn id(&self) -> &str;
}

pub(super) struct ById<T> {
    table: HashTable<T>,
    hasher: RandomState,
}

impl<T> Default for ById<T> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<T: Keyed> ById<T> {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    pub fn get(&self, id: &str) -> Option<&T> {
        self.table.find(self.hash(id), |e| e.id() == id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let hash = self.hash(id);
        self.table.find_mut(hash, |e| e.id() == id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The entry for `id`, made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, id: &str, make: impl FnOnce() -> T) -> &mut T {
        let hash = self.hash(id);
        let hasher = &self.hasher;
        match self
            .table
            .entry(hash, |e| e.id() == id, |e| hasher.hash_one(e.id()))
        {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(vacant) => vacant.insert(make()).into_mut(),
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        let hash = self.hash(id);
        self.table
            .find_entry(hash, |e| e.id() == id)
            .ok()
            .map(|occupied| occupied.remove().0)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> + Clone {
        self.table.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(String, u32);

    impl Keyed for Named {
        fn id(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn entries_are_found_inserted_once_and_removed_by_their_own_id() {
        let mut index = ById::default();
        for i in 0..1_000 {
            index.get_or_insert_with(&format!("device-{i}"), || Named(format!("device-{i}"), i));
        }
        index.get_or_insert_with("device-7", || unreachable!("device-7 is there"));
        assert_eq!(index.values().count(), 1_000);
        assert_eq!(index.get("device-7").map(|e| e.1), Some(7));
        index.get_mut("device-7").unwrap().1 = 70;
        assert_eq!(index.get("device-7").map(|e| e.1), Some(70));
        assert_eq!(index.remove("device-7").map(|e| e.1), Some(70));
        assert!(!index.contains("device-7") && index.remove("device-7").is_none());
        assert_eq!(index.values().count(), 999);
    }
}
