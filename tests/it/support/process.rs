//! Child processes: every server the suite starts (redis-server,
//! nats-server, memcached, chromedriver, switchboard nodes) is a
//! [`ServerProcess`], which owns its start, freeze and thaw, stop, and its
//! end when the handle drops or the test process dies.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::EVENT_TIMEOUT;

/// Finds a server binary on PATH or in /usr/sbin (where Debian puts
/// nats-server), or fails with the command that installs it.
pub fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH or in /usr/sbin. Install the test dependencies with \
                 scripts/install-deps.sh (or: sudo apt-get install redis-server nats-server memcached)"
            )
        })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// With `SWITCHBOARD_TEST_PROCESS_LOG` set to a file, each test that
/// starts a process appends a line `<test>\t<process>` there: how the
/// suite counts the tests that need external processes (the test bed's
/// purpose is to need fewer).
fn note_process(name: &str) {
    let Some(path) = std::env::var_os("SWITCHBOARD_TEST_PROCESS_LOG") else {
        return;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("(a worker thread)")
        .to_owned();
    let line = format!("{test}\t{name}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

/// A child process serving on a loopback port.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
    name: String,
}

impl ServerProcess {
    /// Starts `command`. The kernel kills the child if the test process
    /// dies first (PR_SET_PDEATHSIG), so a failed run leaves nothing
    /// behind.
    pub fn spawn(name: &str, port: u16, command: &mut Command) -> Self {
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // kill the child when this (forking) thread exits.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        note_process(name);
        Self {
            child,
            port,
            name: name.to_owned(),
        }
    }

    /// Waits until the process accepts connections on its port; `false`
    /// if it exited first (a port taken meanwhile, say).
    pub fn wait_for_port(&mut self) -> bool {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("{} on port {} exited: {status}", self.name, self.port);
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{} did not open port {} within {EVENT_TIMEOUT:?}",
            self.name, self.port
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process keeps its sockets open but answers nothing,
    /// like a hung one.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM: asks the process to stop gracefully.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child process.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) }, 0);
    }

    /// SIGKILL, and reaps it: gone at once, like a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process; returns its port, to start another on it.
    pub fn stop(mut self) -> u16 {
        self.kill();
        self.port
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` and waits until every thread of the process has
    /// really stopped (or runs again): kill(2) only queues the signal, and
    /// a request sent right after a freeze may otherwise still be answered.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child process.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
        let stopped = signal == libc::SIGSTOP;
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let states: Vec<bool> = std::fs::read_dir(&tasks)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
                // The state follows the parenthesised command name.
                .filter_map(|stat| stat.rsplit(") ").next()?.chars().next())
                .map(|state| state == 'T' || state == 't')
                .collect();
            if !states.is_empty() && states.iter().all(|s| *s == stopped) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "signal {signal} did not take effect on {}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
