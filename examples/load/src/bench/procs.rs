//! The processes a run measures: started as children, announced by a line
//! on their standard output, watched through `/proc`, and stopped at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child process that this run started, stopped when dropped.
pub(crate) struct Proc {
    /// What it is, for messages.
    pub(crate) name: String,
    child: Child,
    /// Its process id (the master's, for nginx).
    pub(crate) pid: u32,
}

impl Proc {
    /// Starts `command` and waits (at most `within`) for a line on its
    /// standard output that contains `needle`; returns the process and
    /// every line read up to and including that one. The rest of its
    /// output is read and dropped, so a chatty child never blocks on a
    /// full pipe.
    pub(crate) async fn start(
        name: &str,
        mut command: Command,
        needles: &[&str],
        within: Duration,
    ) -> Result<(Proc, Vec<String>), String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("{name}: no standard output"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let mut waiting: Vec<&str> = needles.to_vec();
        let read = async {
            while !waiting.is_empty() {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        waiting.retain(|needle| !line.contains(needle));
                        seen.push(line);
                    }
                    Ok(None) => {
                        return Err(format!("{name} closed its output before it was ready"))
                    }
                    Err(e) => return Err(format!("reading {name}'s output: {e}")),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(within, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(format!("{name} was not ready within {within:?}")),
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((
            Proc {
                name: name.to_owned(),
                child,
                pid,
            },
            seen,
        ))
    }

    /// Starts `command` without waiting for any line (nginx says nothing
    /// when it is ready; its caller polls its port instead).
    pub(crate) fn spawn_quiet(name: &str, mut command: Command) -> Result<Proc, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            pid,
        })
    }

    /// Asks the process to stop (SIGTERM), waits up to 5 s, then kills it.
    pub(crate) async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// CPU seconds (user + system) used so far by it and its children
    /// that are still running (nginx's workers).
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        let ticks = clock_ticks();
        let mut total = 0.0;
        for pid in self.family() {
            total += cpu_ticks(pid)? as f64 / ticks;
        }
        Some(total)
    }

    /// Peak resident memory (VmHWM) in MiB, summed over it and its
    /// children.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        let mut total_kib = 0u64;
        for pid in self.family() {
            total_kib += status_kib(pid, "VmHWM:")?;
        }
        Some(total_kib as f64 / 1024.0)
    }

    /// This process and its direct children.
    fn family(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        let path = format!("/proc/{0}/task/{0}/children", self.pid);
        if let Ok(text) = std::fs::read_to_string(path) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

/// Clock ticks per second, as `/proc/<pid>/stat` counts them.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            // Linux has reported 100 to user space on every platform for decades.
            .unwrap_or(100.0)
    })
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // after its closing parenthesis, where field 3 (state) starts.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The `mediator` binary beside this one (cargo puts every binary of a
/// workspace in one folder), or `--mediator`.
pub(crate) fn mediator_binary(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let me = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let beside = me
        .parent()
        .map(|dir| dir.join("mediator"))
        .ok_or("this executable has no folder")?;
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(format!(
            "no mediator binary at {}: build it (cargo build --release --bin mediator) or pass --mediator",
            beside.display()
        ))
    }
}

/// A free TCP port on loopback (for nginx, which cannot report the port
/// it bound).
pub(crate) fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Waits until something accepts TCP connections at `addr`.
pub(crate) async fn wait_for_port(addr: std::net::SocketAddr, within: Duration) -> bool {
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(status_kib(pid, "VmHWM:").unwrap_or(0) > 0);
        assert!(clock_ticks() > 0.0);
    }
}
