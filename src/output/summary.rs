//! Rendering of `gospy summary`: one screen of text, or one JSON document
//! (the serialized [`Summary`]; schema in README.md).

use std::io::{self, Write};

use crate::summary::{Channel, Summary};

/// Writes `summary` as one pretty-printed JSON document.
pub fn write_json(out: &mut dyn Write, summary: &Summary) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, summary).map_err(io::Error::other)?;
    writeln!(out)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn bytes(v: Option<u64>) -> String {
    match v {
        None => "?".to_string(),
        Some(b) if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{b} B"),
    }
}

fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!(
            "{:.0}h{:02.0}m",
            (seconds / 3600.0).floor(),
            (seconds % 3600.0) / 60.0
        )
    } else if seconds >= 60.0 {
        format!("{:.0}m{:02.0}s", (seconds / 60.0).floor(), seconds % 60.0)
    } else if seconds >= 1.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{:.2}ms", seconds * 1e3)
    }
}

fn channel(c: &Channel) -> String {
    format!(
        "{} on chan {} (len {}, cap {}{})",
        c.direction,
        c.elem_type.as_deref().unwrap_or("?"),
        c.length,
        c.capacity,
        if c.closed { ", closed" } else { "" }
    )
}

/// Writes `summary` as text: header, scheduler, heap, GC, Ps, threads,
/// goroutine counts, then one line per goroutine.
pub fn write_text(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(out, "Process {}: {}", s.pid, s.binary)?;
    writeln!(
        out,
        "Go version: {}   GOMAXPROCS: {}   CPUs: {}   uptime: {}",
        s.go_version,
        opt(s.gomaxprocs),
        opt(s.ncpu),
        s.uptime_seconds.map_or("?".into(), duration)
    )?;
    let sc = &s.scheduler;
    writeln!(
        out,
        "Scheduler: {} idle Ms, {} spinning Ms, {} Ms created, {} idle Ps, {} system goroutines, \
         global run queue {}",
        opt(sc.idle_threads),
        opt(sc.spinning_threads),
        opt(sc.threads_created),
        opt(sc.idle_procs),
        opt(sc.system_goroutines),
        opt(sc.global_runqueue)
    )?;
    let h = &s.heap;
    writeln!(
        out,
        "Heap: in use {}, sys {}, live {}{}, objects {}, mallocs {}, frees {}",
        bytes(h.in_use_bytes),
        bytes(h.sys_bytes),
        bytes(h.live_bytes),
        if h.approximate { " (approx.)" } else { "" },
        opt(h.objects),
        opt(h.mallocs),
        opt(h.frees)
    )?;
    let g = &s.gc;
    writeln!(
        out,
        "GC: {} cycles ({} forced), total pause {}, last pause {}, last GC {}, CPU fraction {}, \
         GOGC {}",
        opt(g.count),
        opt(g.forced_count),
        g.pause_total_ns
            .map_or("?".into(), |ns| duration(ns as f64 / 1e9)),
        g.last_pause_ns
            .map_or("?".into(), |ns| duration(ns as f64 / 1e9)),
        g.since_last_gc_seconds
            .map_or("never".into(), |s| format!("{} ago", duration(s))),
        g.cpu_fraction
            .map_or("?".into(), |f| format!("{:.4}%", f * 100.0)),
        opt(g.gogc)
    )?;
    for p in &s.procs {
        writeln!(
            out,
            "  P{:<3} {:<8} schedtick {:<10} syscalltick {:<10} M {:<5} runq {}",
            p.id,
            p.status,
            p.schedtick,
            p.syscalltick,
            p.m_id.map_or("-".into(), |m| m.to_string()),
            p.runqueue
        )?;
    }
    let t = &s.threads;
    writeln!(
        out,
        "Threads: {} ({} running, {} sleeping, {} stopped, {} zombie)",
        t.total, t.running, t.sleeping, t.stopped, t.zombie
    )?;
    if let Some(hp) = &s.heap_profile {
        let sites: Vec<String> = hp
            .top_sites
            .iter()
            .map(|site| format!("{} {}", site.function, bytes(Some(site.inuse_bytes as u64))))
            .collect();
        writeln!(
            out,
            "Heap profile: {} live (sampled every {}, as of GC cycle {}); top: {}",
            bytes(Some(hp.inuse_bytes.max(0) as u64)),
            bytes(Some(hp.rate.max(0) as u64)),
            hp.cycle,
            if sites.is_empty() {
                "none".to_string()
            } else {
                sites.join(", ")
            }
        )?;
    }
    let c = &s.goroutine_counts;
    let statuses: Vec<String> = c
        .by_status
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    writeln!(
        out,
        "Goroutines: {} ({} user, {} system): {}",
        c.total,
        c.user,
        c.system,
        statuses.join(", ")
    )?;
    for n in &s.notes {
        writeln!(out, "Note: {n}")?;
    }
    writeln!(out)?;
    for g in &s.goroutines {
        let mut state = g.wait_reason.clone().unwrap_or_else(|| g.status.clone());
        if let Some(tid) = g.thread_id {
            state.push_str(&format!(", thread {tid}"));
        }
        if g.system {
            state.push_str(", system");
        }
        if let Some(c) = &g.channel {
            state.push_str(&format!(", {}", channel(c)));
        }
        let at = g.location.as_ref().map_or(String::new(), |l| {
            format!(" {} {}:{}", l.function, l.file, l.line)
        });
        writeln!(out, "{:>6} [{state}]{at}", g.goid)?;
    }
    Ok(())
}
