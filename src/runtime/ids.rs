//! Numeric ids, as PM2's `id` column: every instance slot (project, app,
//! instance index) gets a small integer, unique within the engine, that
//! names it on the command line (`eco stop 3`).
//!
//! An id belongs to the slot, not to the process: restarts, crash
//! restarts, reloads and rollouts replace the process in the same slot and
//! keep it; the daemon saves the table with its state, so a new daemon
//! gives every slot the id it had. A slot's id is freed when the slot goes
//! (scale down, delete, down, an app removed from the file), and a new
//! slot takes the lowest free number. PM2 counts up instead (its ids only
//! start again from 0 once every process is deleted); the lowest free
//! number keeps eco's ids as small as the number of instances. Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One instance slot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub project: String,
    pub app: String,
    pub instance: u32,
}

impl Slot {
    pub fn new(project: &str, app: &str, instance: u32) -> Slot {
        Slot {
            project: project.to_owned(),
            app: app.to_owned(),
            instance,
        }
    }
}

/// One saved id (a row of `state.json`'s `ids`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedId {
    pub id: u32,
    #[serde(flatten)]
    pub slot: Slot,
}

/// The ids given out: slot -> id, and the way back.
#[derive(Debug, Default)]
pub struct IdTable {
    by_slot: BTreeMap<Slot, u32>,
    by_id: BTreeMap<u32, Slot>,
}

impl IdTable {
    /// A table holding the saved ids. A damaged table (an id or a slot
    /// twice) keeps the first entry of each: the slots left out get new
    /// ids when they start, never a number another slot has.
    pub fn from_saved(saved: &[SavedId]) -> IdTable {
        let mut table = IdTable::default();
        for entry in saved {
            if table.by_id.contains_key(&entry.id) || table.by_slot.contains_key(&entry.slot) {
                continue;
            }
            table.insert(entry.slot.clone(), entry.id);
        }
        table
    }

    /// The slot's id, given now (the lowest free number) if it had none.
    pub fn allocate(&mut self, slot: &Slot) -> u32 {
        if let Some(id) = self.by_slot.get(slot) {
            return *id;
        }
        // Ids 0..len with no gap (the usual case: nothing deleted yet): the
        // lowest free one is len, found without a walk over all of them,
        // which made an `up` of 9,000 instances quadratic (seconds of CPU).
        let id = match self.by_id.last_key_value() {
            None => 0,
            Some((&last, _)) if u64::from(last) + 1 == self.by_id.len() as u64 => last + 1,
            Some(_) => lowest_free(self.by_id.keys().copied()),
        };
        self.insert(slot.clone(), id);
        id
    }

    fn insert(&mut self, slot: Slot, id: u32) {
        self.by_id.insert(id, slot.clone());
        self.by_slot.insert(slot, id);
    }

    pub fn get(&self, slot: &Slot) -> Option<u32> {
        self.by_slot.get(slot).copied()
    }

    /// The slot an id names.
    pub fn slot(&self, id: u32) -> Option<&Slot> {
        self.by_id.get(&id)
    }

    /// Frees the ids of the slots `gone` says are gone.
    pub fn free(&mut self, gone: impl Fn(&Slot) -> bool) {
        self.by_slot.retain(|slot, _| !gone(slot));
        self.by_id.retain(|_, slot| !gone(slot));
    }

    /// Frees the ids of instances `from..` of one app (a scale down).
    pub fn free_from(&mut self, project: &str, app: &str, from: u32) {
        self.free(|s| s.project == project && s.app == app && s.instance >= from);
    }

    /// Every id, ordered by id (what the state saves).
    pub fn saved(&self) -> Vec<SavedId> {
        self.by_id
            .iter()
            .map(|(id, slot)| SavedId {
                id: *id,
                slot: slot.clone(),
            })
            .collect()
    }

    /// Every (id, slot), ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.by_id.iter().map(|(id, slot)| (*id, slot))
    }
}

/// The smallest number not in `used` (ascending).
fn lowest_free(used: impl Iterator<Item = u32>) -> u32 {
    let mut next = 0;
    for id in used {
        if id != next {
            break;
        }
        next += 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(app: &str, instance: u32) -> Slot {
        Slot::new("shop", app, instance)
    }

    #[test]
    fn new_slots_take_the_lowest_free_number() {
        let mut ids = IdTable::default();
        assert_eq!(ids.allocate(&slot("web", 0)), 0);
        assert_eq!(ids.allocate(&slot("web", 1)), 1);
        assert_eq!(ids.allocate(&slot("web", 2)), 2);
        assert_eq!(ids.allocate(&slot("api", 0)), 3);
        // The same slot (a restart, a reload) keeps its id.
        assert_eq!(ids.allocate(&slot("web", 1)), 1);
        // Scale web down to 1: 1 and 2 are freed, then taken again.
        ids.free_from("shop", "web", 1);
        assert_eq!(ids.slot(1), None);
        assert_eq!(ids.get(&slot("api", 0)), Some(3));
        assert_eq!(ids.allocate(&Slot::new("other", "lone", 0)), 1);
        assert_eq!(ids.allocate(&slot("web", 1)), 2);
        assert_eq!(ids.allocate(&slot("web", 2)), 4);
    }

    #[test]
    fn saved_ids_come_back_as_they_were() {
        let mut ids = IdTable::default();
        for (app, i) in [("web", 0), ("web", 1), ("api", 0)] {
            ids.allocate(&slot(app, i));
        }
        ids.free(|s| s.app == "web" && s.instance == 0);
        let json = serde_json::to_string(&ids.saved()).expect("json");
        assert_eq!(
            json,
            r#"[{"id":1,"project":"shop","app":"web","instance":1},{"id":2,"project":"shop","app":"api","instance":0}]"#
        );
        let saved: Vec<SavedId> = serde_json::from_str(&json).expect("back");
        let mut back = IdTable::from_saved(&saved);
        assert_eq!(back.get(&slot("api", 0)), Some(2));
        assert_eq!(back.allocate(&slot("web", 1)), 1);
        assert_eq!(back.allocate(&slot("web", 0)), 0);
    }

    #[test]
    fn a_damaged_table_never_gives_one_number_twice() {
        let saved = vec![
            SavedId {
                id: 0,
                slot: slot("web", 0),
            },
            SavedId {
                id: 0,
                slot: slot("api", 0),
            },
            SavedId {
                id: 5,
                slot: slot("web", 0),
            },
        ];
        let mut ids = IdTable::from_saved(&saved);
        assert_eq!(ids.get(&slot("web", 0)), Some(0));
        assert_eq!(ids.allocate(&slot("api", 0)), 1);
        assert_eq!(ids.slot(5), None);
    }
}
