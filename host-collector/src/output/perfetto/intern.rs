//! Interning for one packet sequence: each distinct event name, category,
//! annotation name, annotation string, frame and callstack gets one iid, and its
//! definition goes into the `InternedData` of the first packet that uses it.

use std::collections::HashMap;

use super::protos::{
    Callstack, DebugAnnotationName, EventCategory, EventName, Frame, InternedData, InternedString,
    frame,
};

/// One interning table: key → iid (iids start at 1, 0 means "not set").
#[derive(Debug, Default)]
struct Table<K> {
    iids: HashMap<K, u64>,
}

impl<K: std::hash::Hash + Eq> Table<K> {
    /// The key's iid and whether it is new.
    fn intern(&mut self, key: K) -> (u64, bool) {
        let next = self.iids.len() as u64 + 1;
        let mut new = false;
        let iid = *self.iids.entry(key).or_insert_with(|| {
            new = true;
            next
        });
        (iid, new)
    }

    fn len(&self) -> usize {
        self.iids.len()
    }
}

/// The interning state of one sequence (valid from its
/// `SEQ_INCREMENTAL_STATE_CLEARED` packet on).
#[derive(Debug, Default)]
pub struct Interner {
    event_names: Table<String>,
    categories: Table<String>,
    annotation_names: Table<String>,
    annotation_strings: Table<String>,
    /// A frame's name is its symbolized text as `events.jsonl` holds it
    /// (`function+0xoff [module]`, and file:line when known), so frames and
    /// function names are one to one.
    function_names: Table<String>,
    frames: Table<u64>,
    callstacks: Table<Vec<u64>>,
}

impl Interner {
    /// The iid of an event name, defined in `new` when it is new.
    pub fn event_name(&mut self, name: &str, new: &mut InternedData) -> u64 {
        let (iid, is_new) = self.event_names.intern(name.to_string());
        if is_new {
            new.event_names.push(EventName {
                iid: Some(iid),
                name: Some(name.to_string()),
            });
        }
        iid
    }

    /// The iid of an event category, defined in `new` when it is new.
    pub fn category(&mut self, name: &str, new: &mut InternedData) -> u64 {
        let (iid, is_new) = self.categories.intern(name.to_string());
        if is_new {
            new.event_categories.push(EventCategory {
                iid: Some(iid),
                name: Some(name.to_string()),
            });
        }
        iid
    }

    /// The iid of a debug annotation's name, defined in `new` when it is new.
    pub fn annotation_name(&mut self, name: &str, new: &mut InternedData) -> u64 {
        let (iid, is_new) = self.annotation_names.intern(name.to_string());
        if is_new {
            new.debug_annotation_names.push(DebugAnnotationName {
                iid: Some(iid),
                name: Some(name.to_string()),
            });
        }
        iid
    }

    /// The iid of a debug annotation's string value, defined in `new` when it is new.
    pub fn annotation_string(&mut self, value: &str, new: &mut InternedData) -> u64 {
        let (iid, is_new) = self.annotation_strings.intern(value.to_string());
        if is_new {
            new.debug_annotation_string_values.push(InternedString {
                iid: Some(iid),
                str: Some(value.as_bytes().to_vec()),
            });
        }
        iid
    }

    /// The iid of a kernel stack (frames innermost first, as `events.jsonl` has
    /// them), defining its new frames, their names and the callstack in `new`;
    /// `None` for an empty stack.
    pub fn callstack(&mut self, innermost_first: &[String], new: &mut InternedData) -> Option<u64> {
        if innermost_first.is_empty() {
            return None;
        }
        // Perfetto's Callstack lists the bottom (outermost) frame first.
        let frame_ids: Vec<u64> = innermost_first
            .iter()
            .rev()
            .map(|text| {
                let (name_iid, name_new) = self.function_names.intern(text.clone());
                if name_new {
                    new.function_names.push(InternedString {
                        iid: Some(name_iid),
                        str: Some(text.as_bytes().to_vec()),
                    });
                }
                let (frame_iid, frame_new) = self.frames.intern(name_iid);
                if frame_new {
                    new.frames.push(Frame {
                        iid: Some(frame_iid),
                        function_name_id: Some(name_iid),
                        kind_field: Some(frame::KindField::Kind(frame::Kind::Kernel as i32)),
                    });
                }
                frame_iid
            })
            .collect();
        let (iid, is_new) = self.callstacks.intern(frame_ids.clone());
        if is_new {
            new.callstacks.push(Callstack {
                iid: Some(iid),
                frame_ids,
            });
        }
        Some(iid)
    }

    /// Distinct (frames, callstacks) interned so far.
    pub fn stack_counts(&self) -> (usize, usize) {
        (self.frames.len(), self.callstacks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn each_distinct_stack_gets_one_iid_and_each_frame_is_defined_once() {
        let mut i = Interner::default();
        let a = stack(&[
            "_raw_spin_lock+0x5",
            "scheduler_tick+0x4a",
            "tick_sched_handle+0x22",
        ]);
        let b = stack(&[
            "_raw_spin_lock+0x5",
            "tick_do_update_jiffies64+0x25",
            "tick_sched_handle+0x22",
        ]);
        let mut first = InternedData::default();
        let ia = i.callstack(&a, &mut first).unwrap();
        assert_eq!(first.callstacks.len(), 1);
        assert_eq!(first.frames.len(), 3);
        assert_eq!(first.function_names.len(), 3);
        // Bottom frame first.
        let names: HashMap<u64, &[u8]> = first
            .function_names
            .iter()
            .map(|s| (s.iid.unwrap(), s.str.as_deref().unwrap()))
            .collect();
        let bottom = &first.frames[0];
        assert_eq!(first.callstacks[0].frame_ids[0], bottom.iid.unwrap());
        assert_eq!(
            names[&bottom.function_name_id.unwrap()],
            b"tick_sched_handle+0x22"
        );

        let mut again = InternedData::default();
        assert_eq!(i.callstack(&a, &mut again), Some(ia));
        assert_eq!(
            again,
            InternedData::default(),
            "nothing new for a known stack"
        );

        let mut second = InternedData::default();
        let ib = i.callstack(&b, &mut second).unwrap();
        assert_ne!(ia, ib);
        // Only the one frame `a` did not have is new.
        assert_eq!(second.frames.len(), 1);
        assert_eq!(second.function_names.len(), 1);
        assert_eq!(second.callstacks.len(), 1);
        assert_eq!(i.stack_counts(), (4, 2));
        assert_eq!(i.callstack(&[], &mut second), None);
    }

    #[test]
    fn names_are_interned_once_per_table() {
        let mut i = Interner::default();
        let mut d = InternedData::default();
        let x = i.event_name("spin_lock", &mut d);
        assert_eq!(i.event_name("spin_lock", &mut d), x);
        // Tables are separate: the same text in another table gets its own entry.
        assert_eq!(i.category("spin_lock", &mut d), 1);
        assert_eq!(i.annotation_name("cpu", &mut d), 1);
        assert_eq!(i.annotation_string("jiffies_lock", &mut d), 1);
        assert_eq!(d.event_names.len(), 1);
        assert_eq!(d.event_categories.len(), 1);
        assert_eq!(d.debug_annotation_names.len(), 1);
        assert_eq!(d.debug_annotation_string_values.len(), 1);
    }
}
