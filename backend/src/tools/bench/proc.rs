//! The processes under test, watched from outside: a child started from this very binary
//! (`hermod serve` or `hermod bench-floor`), its port read from its log, its memory and CPU read
//! from `/proc/<pid>`; and a description of the machine for the report.

use anyhow::Context;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is killed (by its own pid) and reaped when dropped.
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `hermod <args>` with `envs`, logging to `log`, and waits (at most `within`) for the
    /// `port=N` its listening line carries.
    pub fn start(args: &[&str], envs: &[(&str, String)], log: &Path, within: Duration) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the hermod binary")?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().context("starting the server under test")?;
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        // Owned at once, so that a failed start still kills and reaps the process.
        let mut server = Self {
            child,
            pid,
            base: String::new(),
        };
        let mut file = std::fs::File::create(log)?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                anyhow::bail!(
                    "the server did not report its port within {within:?}; its log ({}): {seen:#?}",
                    log.display()
                );
            };
            if let Some(port) = line.split("port=").nth(1) {
                let port: u16 = port.split_whitespace().next().unwrap_or_default().parse()?;
                server.base = format!("http://127.0.0.1:{port}");
                return Ok(server);
            }
            seen.push(line);
        }
    }

    pub fn usage(&self) -> Usage {
        Usage::of(self.pid)
    }
}

/// Memory and CPU time of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Resident set size now, bytes.
    pub rss: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

impl Usage {
    pub fn of(pid: u32) -> Self {
        Self::read(&format!("/proc/{pid}"))
    }

    pub fn of_self() -> Self {
        Self::read("/proc/self")
    }

    fn read(dir: &str) -> Self {
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at field 3.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime is field 14 and stime field 15, that is 11 and 12 after the name.
        let total = ticks(11) + ticks(12);
        Self {
            rss: kb("VmRSS:"),
            peak_rss: kb("VmHWM:"),
            cpu: Duration::from_secs_f64(total as f64 / clock_ticks() as f64),
        }
    }
}

/// CPU percent of one core used between two samples taken `wall` apart.
pub fn cpu_percent(before: Usage, after: Usage, wall: Duration) -> f64 {
    let used = after.cpu.saturating_sub(before.cpu);
    100.0 * used.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The machine a report was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gb: f64,
    pub os: String,
    pub kernel: String,
    pub open_files_limit: Option<u64>,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| std::env::consts::OS.into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let open_files_limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
        Self {
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gb: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os,
            kernel,
            open_files_limit,
        }
    }
}
