//! Stack classification by rules: which subsystem took a lock, which path led to a
//! fault. The rules are data — a table of frame → class — not code.
//!
//! A stack is walked from the innermost frame outwards, skipping the frames named
//! in [`Rules::skip`] (the lock function itself); the first frame that matches a
//! rule decides the class. A frame matches a rule when its function name equals
//! one of the rule's names or starts with one of its prefixes.

use serde::Serialize;

use guest_kernel::kallsyms::frame_function;

/// One rule: frames that put a stack in `class`.
#[derive(Clone, Debug, Serialize)]
pub struct Rule {
    /// Class name shown in the report.
    pub class: &'static str,
    /// Exact function names.
    pub functions: &'static [&'static str],
    /// Function-name prefixes.
    pub prefixes: &'static [&'static str],
}

/// An ordered rule table.
#[derive(Clone, Debug, Serialize)]
pub struct Rules {
    /// Frames skipped before matching (e.g. the lock primitive).
    pub skip: &'static [&'static str],
    /// Rules, tried in order for each frame.
    pub rules: &'static [Rule],
    /// Class of a stack no rule matches.
    pub other: &'static str,
}

/// The result of classifying one stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Classified {
    /// The class.
    pub class: &'static str,
    /// The frame that decided it (function name), if a rule matched.
    pub decided_by: Option<String>,
}

impl Rule {
    fn matches(&self, func: &str) -> bool {
        self.functions.contains(&func) || self.prefixes.iter().any(|p| func.starts_with(p))
    }
}

impl Rules {
    /// Classifies a symbolized stack (innermost frame first).
    pub fn classify(&self, frames: &[String]) -> Classified {
        for f in frames {
            let func = frame_function(f);
            if self.skip.contains(&func) {
                continue;
            }
            for rule in self.rules {
                if rule.matches(func) {
                    return Classified {
                        class: rule.class,
                        decided_by: Some(func.to_string()),
                    };
                }
            }
        }
        Classified {
            class: self.other,
            decided_by: None,
        }
    }

    /// Every class name, in table order, then the fallback.
    pub fn classes(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Vec::new();
        for r in self.rules {
            if !v.contains(&r.class) {
                v.push(r.class);
            }
        }
        v.push(self.other);
        v
    }
}

/// Subsystem that took a `_raw_spin_lock`, the lab's §5 question.
pub const SPIN_LOCK_RULES: Rules = Rules {
    skip: &[
        "_raw_spin_lock",
        "raw_spin_rq_lock_nested",
        "_raw_spin_lock_nested",
    ],
    rules: &[
        Rule {
            class: "timers",
            functions: &[
                "tick_do_update_jiffies64",
                "tick_sched_do_timer",
                "tick_sched_timer",
                "tick_nohz_handler",
                "__run_timers",
                "run_timer_softirq",
                "hrtimer_interrupt",
                "__hrtimer_run_queues",
                "lock_hrtimer_base",
                "add_timer",
                "mod_timer",
                "__mod_timer",
                "del_timer",
                "timer_delete",
                "update_wall_time",
                "timekeeping_advance",
            ],
            prefixes: &["tick_", "hrtimer_", "timer_"],
        },
        Rule {
            class: "scheduler",
            functions: &[
                "__schedule",
                "schedule_tail",
                "scheduler_tick",
                "try_to_wake_up",
                "ttwu_queue",
                "wake_up_new_task",
                "sched_tick",
                "task_rq_lock",
                "__task_rq_lock",
                "rq_lock",
                "load_balance",
                "sched_balance_rq",
                "newidle_balance",
                "finish_task_switch",
            ],
            prefixes: &["sched_", "psi_", "update_rq_", "pick_next_task"],
        },
        Rule {
            class: "file system",
            functions: &[
                "alloc_fd",
                "close_fd",
                "file_close_fd",
                "__close_fd",
                "fd_install",
                "expand_files",
                "do_dup2",
                "lockref_get",
                "lockref_get_not_dead",
                "lockref_put_return",
                "lockref_get_not_zero",
                "dput",
                "d_alloc",
                "d_alloc_parallel",
                "__d_lookup",
                "__d_add",
                "d_instantiate",
                "inode_sb_list_add",
                "iput",
                "new_inode",
                "path_init",
                "simple_offset_add",
            ],
            prefixes: &[
                "d_",
                "__d_",
                "dentry_",
                "inode_",
                "ext4_",
                "shmem_",
                "proc_",
                "seq_",
                "vfs_",
                "do_sys_open",
                "__fput",
                "kernfs_",
                "tmpfs",
            ],
        },
        Rule {
            class: "memory",
            functions: &[
                "handle_mm_fault",
                "__handle_mm_fault",
                "do_anonymous_page",
                "__pte_alloc",
                "pte_alloc_one",
                "do_wp_page",
                "wp_page_copy",
                "unmap_page_range",
                "zap_pte_range",
                "free_pgtables",
                "mmap_region",
                "do_brk_flags",
                "exit_mmap",
                "rmqueue",
                "rmqueue_bulk",
                "free_pcppages_bulk",
                "__pte_offset_map_lock",
                "copy_pte_range",
            ],
            prefixes: &[
                "__pmd_alloc",
                "__pud_alloc",
                "pte_",
                "alloc_pages",
                "__alloc_pages",
                "page_",
                "folio_",
                "mm_",
                "vma_",
                "lru_",
            ],
        },
    ],
    other: "other",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn s(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn lab_listing_9_is_timers() {
        let c = SPIN_LOCK_RULES.classify(&s(&[
            "_raw_spin_lock+0x5",
            "tick_do_update_jiffies64+0x4a",
            "tick_sched_do_timer+0x8e",
            "tick_sched_timer+0x2a",
            "__hrtimer_run_queues+0x112",
            "sysvec_apic_timer_interrupt+0x9e",
        ]));
        assert_eq!(
            c,
            Classified {
                class: "timers",
                decided_by: Some("tick_do_update_jiffies64".into())
            }
        );
    }

    #[test]
    fn lab_listing_11_is_file_system() {
        let c = SPIN_LOCK_RULES.classify(&s(&[
            "_raw_spin_lock+0x5",
            "alloc_fd+0x4e",
            "do_sys_openat2+0x7c",
            "__x64_sys_openat+0x6b",
        ]));
        assert_eq!(c.class, "file system");
    }

    #[test]
    fn lab_listing_13_is_scheduler_even_from_a_fault() {
        let c = SPIN_LOCK_RULES.classify(&s(&[
            "_raw_spin_lock+0x5",
            "raw_spin_rq_lock_nested+0x12",
            "__schedule+0xa0",
            "preempt_schedule_common+0x1a",
            "pte_alloc_one+0x20",
            "exc_page_fault+0x70",
        ]));
        assert_eq!(c.class, "scheduler");
    }

    #[test]
    fn unmatched_is_other_and_classes_are_listed_once() {
        let c = SPIN_LOCK_RULES.classify(&s(&["_raw_spin_lock+0x5", "mystery+0x1"]));
        assert_eq!(
            c,
            Classified {
                class: "other",
                decided_by: None
            }
        );
        assert_eq!(
            SPIN_LOCK_RULES.classes(),
            vec!["timers", "scheduler", "file system", "memory", "other"]
        );
    }
}
