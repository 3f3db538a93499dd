//! Sampling every worker's memory and CPU on a timer, on a thread of its own (reading `/proc` and
//! cgroup files is blocking work, kept off the async runtime), and enforcing `runtime.memory_max`
//! where the kernel does not: a worker sampled over its limit is reported to its task, which
//! kills it and lets its restart policy handle it as a crash (like pm2's `max_memory_restart`).
//!
//! Memory is the resident set (RSS) summed over the worker's processes: those of its cgroup, or
//! those of its process group. CPU is the cgroup's `cpu.stat` (which keeps the time of exited
//! processes), or without a cgroup the user and system time of the group's live processes plus
//! what they collected from their waited-for children.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use super::cgroup::Cgroup;
use super::registry::{Command, Sample, Target};
use super::Inner;

/// Starts the sampler thread; it ends once the supervisor is gone.
pub(super) fn start(inner: Weak<Inner>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("agentd-usage".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(inner) = inner.upgrade() else {
                return;
            };
            sample(&inner);
        });
    if let Err(e) = spawned {
        tracing::warn!(
            "cannot start the usage sampler ({e}): /list shows no memory or CPU, and \
             runtime.memory_max is enforced only where the kernel does it"
        );
    }
}

/// Samples every running worker once, records the figures and reports those over their limit.
fn sample(inner: &Inner) {
    let targets = inner.registry.targets();
    if targets.is_empty() {
        return;
    }
    let page = sysconf(libc::_SC_PAGESIZE, 4096);
    let ticks = sysconf(libc::_SC_CLK_TCK, 100) as f64;
    let groups = if targets.iter().any(|t| t.cgroup.is_none()) {
        by_group()
    } else {
        HashMap::new()
    };
    let mut samples = Vec::with_capacity(targets.len());
    for t in targets {
        let (memory_bytes, cpu_seconds) = match &t.cgroup {
            Some(dir) => {
                let cg = Cgroup::at(dir.clone());
                let pages: u64 = cg
                    .pids()
                    .into_iter()
                    .filter_map(stat)
                    .map(|s| s.rss_pages)
                    .sum();
                let cpu = cg.cpu_usec().map_or(0.0, |us| us as f64 / 1e6);
                (pages * page, cpu)
            }
            None => {
                let u = groups.get(&(t.pid as i32)).copied().unwrap_or_default();
                (u.rss_pages * page, u.cpu_ticks as f64 / ticks)
            }
        };
        enforce(&t, memory_bytes);
        samples.push(Sample {
            channel: t.channel,
            generation: t.generation,
            pid: t.pid,
            memory_bytes,
            cpu_seconds: (cpu_seconds * 1000.0).round() / 1000.0,
        });
    }
    inner.registry.record(samples);
}

/// Tells the worker's task when it is over the limit agentd enforces for it.
fn enforce(t: &Target, rss: u64) {
    if let (Some(limit), Some(tx)) = (t.memory_max, &t.tx) {
        if rss > limit {
            let _ = tx.send(Command::OverMemory {
                pid: t.pid,
                rss,
                limit,
            });
        }
    }
}

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    pgrp: i32,
    rss_pages: u64,
    /// utime + stime + cutime + cstime.
    cpu_ticks: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // Fields after the command name, which is in parentheses and may contain anything; f[0] is
    // field 3 of proc(5).
    let f: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        pgrp: f.get(2)?.parse().ok()?,
        rss_pages: num(21)?,
        cpu_ticks: [11, 12, 13, 14].iter().filter_map(|i| num(*i)).sum(),
    })
}

/// RSS and CPU per process group, in one pass over `/proc`.
fn by_group() -> HashMap<i32, Stat> {
    let mut out: HashMap<i32, Stat> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if let Some(s) = stat(pid) {
            let g = out.entry(s.pgrp).or_default();
            g.rss_pages += s.rss_pages;
            g.cpu_ticks += s.cpu_ticks;
        }
    }
    out
}

/// A `sysconf` value, or `default` where the system does not say.
fn sysconf(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_with_odd_command_names() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    7 3 2 1 20 0 1 0 12345 1000000 250 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.rss_pages, 250);
        assert_eq!(s.cpu_ticks, 13);
        assert!(parse_stat("garbage").is_none());
    }
}
