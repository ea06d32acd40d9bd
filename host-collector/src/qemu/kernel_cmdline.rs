//! The guest kernel's command line: what every boot gets, what guestscope's own boots
//! add, and the user's `--append` last (so a parameter given there wins).

/// Every boot: the console on the serial port, and a panic ends QEMU.
pub const BASE: &str = "console=ttyS0 panic=-1";

/// Added for guestscope's own boots (the traced boot, the CR3 boots, the bench's),
/// never for the lab's boot-time boots, which boot as the lab did:
/// `cryptomgr.notests=1` skips the crypto API's self-test of every algorithm it
/// registers, which the kernel runs before it starts init (`crypto_algapi_init`,
/// 0.22 s of `initcall_debug`'s times under TCG; the first line of init came
/// 0.26–0.29 s sooner, 1.72–1.75 → 1.46 s, three boots each). Nothing guestscope
/// traces or reads uses the crypto API, and the algorithms still work untested.
pub const OWN_BOOTS: &str = "cryptomgr.notests=1";

/// The command line of a boot: [`BASE`], [`OWN_BOOTS`] unless it is a boot-time boot,
/// then the user's `extra`.
pub fn for_boot(boot_time: bool, extra: &str) -> String {
    let own = if boot_time { "" } else { OWN_BOOTS };
    [BASE, own, extra.trim()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_boots_skip_the_crypto_self_tests_and_boot_time_boots_do_not() {
        assert_eq!(
            for_boot(false, ""),
            "console=ttyS0 panic=-1 cryptomgr.notests=1"
        );
        assert_eq!(for_boot(true, ""), "console=ttyS0 panic=-1");
    }

    #[test]
    fn the_users_parameters_come_last_so_they_win() {
        assert_eq!(
            for_boot(false, " nokaslr cryptomgr.notests=0 "),
            "console=ttyS0 panic=-1 cryptomgr.notests=1 nokaslr cryptomgr.notests=0"
        );
        assert_eq!(for_boot(true, "nokaslr"), "console=ttyS0 panic=-1 nokaslr");
    }
}
