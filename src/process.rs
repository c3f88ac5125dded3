//! What the operating system says about this process (Linux `/proc`), for
//! `/metrics` and the benchmark tooling, plus raising the open-files
//! limit so that a node can hold as many sessions as the machine allows.

use std::path::Path;

/// CPU time used so far (user + system), in seconds, of process `pid`
/// ("self" for this one). `None` where /proc is unavailable.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its
    // closing parenthesis are plain. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Resident memory of process `pid` ("self" for this one), in bytes.
pub fn resident_bytes(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(Path::new("/proc").join(pid).join("statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Context switches of every thread of process `pid` ("self" for this
/// one) so far: (voluntary, involuntary). A voluntary one is a thread that
/// went to sleep waiting (for work, a lock, I/O): what wake-ups cost.
pub fn context_switches(pid: &str) -> Option<(u64, u64)> {
    let tasks = std::fs::read_dir(Path::new("/proc").join(pid).join("task")).ok()?;
    let (mut voluntary, mut involuntary) = (0, 0);
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let value = |prefix: &str| line.strip_prefix(prefix)?.trim().parse::<u64>().ok();
            if let Some(n) = value("voluntary_ctxt_switches:") {
                voluntary += n;
            } else if let Some(n) = value("nonvoluntary_ctxt_switches:") {
                involuntary += n;
            }
        }
    }
    Some((voluntary, involuntary))
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// The soft limit on open files in force.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Raises the soft limit on open files to the hard limit: every session is
/// a file descriptor, and distributions default the soft limit to 1024.
/// Returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(resident_bytes("self").unwrap() > 1024 * 1024);
        assert!(open_fds().unwrap() >= 3);
        assert!(raise_open_files_limit().unwrap() >= 3);
        assert_eq!(cpu_seconds("no-such-pid"), None);
    }
}
