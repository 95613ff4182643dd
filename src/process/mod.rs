//! Reading a live process: `/proc` (executable, threads, maps), memory reads
//! with batched `process_vm_readv` ([`memory`]), and pausing every thread
//! with ptrace ([`ptrace`]).
//!
//! Typical use, one sample:
//! ```no_run
//! # fn f() -> gospy::Result<()> {
//! use gospy::process::{MemorySnapshot, Process};
//! let proc = Process::open(1234)?;
//! let mem = proc.memory();
//! let pause = proc.pause()?; // every thread stopped, registers read
//! let mut snap = MemorySnapshot::new();
//! snap.request(0xc000000000, 4096);
//! snap.fetch(&mem)?;
//! let stopped_for = pause.resume(); // the target runs again
//! // ... decode from `snap` ...
//! # let _ = stopped_for; Ok(()) }
//! ```

pub mod maps;
pub mod memory;
pub mod perf;
pub mod ptrace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
pub use maps::{ExeIdentity, FirstLoad, MapEntry};

pub use memory::{FetchStats, Memory, MemorySnapshot, ProcessMemory};
pub use ptrace::{is_traced_by_other, pause, Pause, Registers, StopKind, StoppedThread};

/// A process gospy looks at. Holds no file descriptors and no ptrace
/// attachment; it is cheap to keep around for the whole session.
#[derive(Debug, Clone)]
pub struct Process {
    pid: i32,
    /// Target of the `/proc/PID/exe` link at open time.
    exe_link: PathBuf,
    /// Start time in clock ticks after boot (field 22 of `/proc/PID/stat`);
    /// tells a PID that was reused by another process apart.
    start_time: u64,
}

/// The fields of `/proc/PID/stat` gospy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub start_time: u64,
    /// User plus system CPU time of every thread, live and exited, in clock
    /// ticks (fields 14 and 15).
    pub cpu_ticks: u64,
}

impl Process {
    /// Opens process `pid`: checks that it exists, is not a zombie, and that
    /// its executable can be reached (which needs the same permission as
    /// ptrace).
    pub fn open(pid: i32) -> Result<Process> {
        if pid <= 0 {
            return Err(Error::NoSuchProcess(pid));
        }
        let stat = match read_stat(pid) {
            Ok(s) => s,
            Err(e) if is_gone(&e) => return Err(Error::NoSuchProcess(pid)),
            Err(e) => return Err(proc_error(pid, e, "read the status of", "stat")),
        };
        if let Some(tgid) = status_field(pid, "Tgid:").and_then(|s| s.parse::<i32>().ok()) {
            if tgid != pid {
                return Err(Error::Other(format!(
                    "{pid} is a thread of process {tgid}, not a process: run gospy on PID {tgid}"
                )));
            }
        }
        check_not_zombie(pid, stat.state)?;
        let exe_link = match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(p) => p,
            Err(e) if is_permission(&e) => {
                return Err(Error::PermissionDenied {
                    pid,
                    operation: "read the executable of".into(),
                })
            }
            Err(e) if is_gone(&e) => {
                return Err(match read_stat(pid) {
                    Err(_) => Error::NoSuchProcess(pid),
                    Ok(s) if matches!(s.state, 'Z' | 'X') => Error::Zombie(pid),
                    Ok(_) => Error::Other(format!(
                        "process {pid} has no executable (is it a kernel thread?)"
                    )),
                })
            }
            Err(e) => return Err(Error::io(format!("reading /proc/{pid}/exe"), e)),
        };
        Ok(Process {
            pid,
            exe_link,
            start_time: stat.start_time,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A path gospy can open the executable through: `/proc/PID/exe`, which
    /// works across mount namespaces (containers) and for deleted files.
    pub fn exe_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/exe", self.pid))
    }

    /// The executable's path as the target sees it, for display (may end
    /// in ` (deleted)`).
    pub fn exe_display(&self) -> String {
        self.exe_link.to_string_lossy().into_owned()
    }

    /// Command line arguments; empty if unreadable.
    pub fn cmdline(&self) -> Vec<String> {
        match std::fs::read(format!("/proc/{}/cmdline", self.pid)) {
            Ok(bytes) => split_nul(&bytes),
            Err(_) => Vec::new(),
        }
    }

    /// Start time in clock ticks after boot.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// TIDs of all threads, from `/proc/PID/task`.
    pub fn threads(&self) -> Result<Vec<i32>> {
        list_tasks(self.pid).map_err(|e| proc_error(self.pid, e, "list the threads of", "task"))
    }

    /// State letter of each thread (`R` running, `S` sleeping, `D` disk
    /// sleep, `T` stopped, `t` tracing stop, `Z` zombie, ...). Threads that
    /// exit while being listed are left out.
    pub fn thread_states(&self) -> Result<Vec<(i32, char)>> {
        let tids = self.threads()?;
        Ok(tids
            .into_iter()
            .filter_map(|tid| thread_state(self.pid, tid).map(|s| (tid, s)))
            .collect())
    }

    /// Whether the process lives in another PID namespace than gospy (a
    /// container seen from the host): then the thread ids its runtime
    /// records (`m.procid`) are not the ones gospy sees.
    pub fn in_other_pid_namespace(&self) -> bool {
        let ns = |path: String| std::fs::read_link(path).ok();
        match (
            ns("/proc/self/ns/pid".into()),
            ns(format!("/proc/{}/ns/pid", self.pid)),
        ) {
            (Some(ours), Some(theirs)) => ours != theirs,
            _ => false,
        }
    }

    /// For a process in another PID namespace: gospy's thread id of each
    /// thread, by the id the process itself sees (the `NSpid:` line of
    /// `/proc/PID/task/TID/status` lists the ids from the outermost
    /// namespace in).
    pub fn namespace_thread_ids(&self) -> Result<HashMap<u64, u64>> {
        let mut ids = HashMap::new();
        for tid in self.threads()? {
            let path = format!("/proc/{}/task/{tid}/status", self.pid);
            let Some(line) = status_field_at(&path, "NSpid:") else {
                continue;
            };
            if let Some(inner) = line.split_whitespace().last().and_then(|v| v.parse().ok()) {
                ids.insert(inner, tid as u64);
            }
        }
        Ok(ids)
    }

    /// True while the process runs (or is stopped) and is still the one
    /// that was opened (same start time: the PID was not reused).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok(s) => s.start_time == self.start_time && check_not_zombie(self.pid, s.state).is_ok(),
            Err(_) => false,
        }
    }

    /// CPU time the process has used (user and system, every thread, live
    /// or exited) as the kernel accounts it: what `top` and the runtime's
    /// own profiler see. To a clock tick (10 ms).
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = read_stat(self.pid).map_err(|_| Error::ProcessExited { pid: self.pid })?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&hz| hz > 0)
            .unwrap_or(100) as u64;
        Ok(Duration::from_nanos(
            stat.cpu_ticks.saturating_mul(1_000_000_000 / hz),
        ))
    }

    /// Reader of the process's memory.
    pub fn memory(&self) -> ProcessMemory {
        ProcessMemory::new(self.pid)
    }

    /// Parsed `/proc/PID/maps`.
    pub fn maps(&self) -> Result<Vec<MapEntry>> {
        maps::read_maps(self.pid)
    }

    /// Stops every thread; see [`ptrace::pause`].
    pub fn pause(&self) -> Result<Pause> {
        ptrace::pause(self.pid)
    }

    /// Load bias of the main executable (0 for non-PIE): add it to the
    /// link-time addresses read from `image`.
    pub fn load_bias(&self, image: &crate::binary::ElfImage) -> Result<u64> {
        let seg = image.first_load().ok_or_else(|| {
            Error::Other(format!(
                "{}: the executable has no PT_LOAD segment",
                self.exe_display()
            ))
        })?;
        let first = FirstLoad {
            vaddr: seg.vaddr,
            offset: seg.offset,
        };
        self.load_bias_for(first)
    }

    /// Load bias given the first PT_LOAD of the executable.
    pub fn load_bias_for(&self, first: FirstLoad) -> Result<u64> {
        maps::load_bias_for(self.pid, &self.exe_path(), first)
    }
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A zombie thread group leader whose other threads still run is alive; a
/// leader alone in state Z (or X) is a zombie.
pub(crate) fn check_not_zombie(pid: i32, state: char) -> Result<()> {
    if matches!(state, 'Z' | 'X') {
        let threads = status_field(pid, "Threads:")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(1);
        if threads <= 1 {
            return Err(Error::Zombie(pid));
        }
    }
    Ok(())
}

/// Parses the text of a `/proc/PID/stat` or `/proc/PID/task/TID/stat`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) S ppid ..." — comm may contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state, 14 and 15 utime and stime, 22 starttime.
    let state = fields.next()?.chars().next()?;
    let utime: u64 = fields.nth(14 - 4)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let start_time = fields.nth(22 - 16)?.parse().ok()?;
    Some(ProcStat {
        state,
        start_time,
        cpu_ticks: utime.saturating_add(stime),
    })
}

pub(crate) fn read_stat(pid: i32) -> std::io::Result<ProcStat> {
    // One read into a stack buffer (the file is a few hundred bytes): this
    // runs before every pause, and read_to_string takes six system calls.
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat"))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    parse_stat(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

/// State letter of thread `tid` of process `pid`, None if it is gone.
pub(crate) fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_stat(&text).map(|s| s.state)
}

/// Scheduler states of one process's threads (`/proc/PID/task/TID/stat`),
/// for a sampler that asks about the same threads at every sample: each
/// file is kept open and re-read with `pread`, a third of the cost of
/// opening it each time.
#[derive(Debug)]
pub struct ThreadStates {
    pid: i32,
    files: Mutex<HashMap<(i32, ThreadFile), std::fs::File>>,
}

/// The per-thread `/proc` files [`ThreadStates`] keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ThreadFile {
    Stat,
    Schedstat,
}

/// Open stat files kept at most (a program that churns threads would
/// otherwise grow the map without bound).
const MAX_OPEN_STAT_FILES: usize = 4096;

impl ThreadStates {
    pub fn new(pid: i32) -> ThreadStates {
        ThreadStates {
            pid,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// State letter of thread `tid` (`R` running or runnable, `S`, `D`...),
    /// None if it is gone.
    pub fn state(&self, tid: i32) -> Option<char> {
        let mut buf = [0u8; 1024];
        let n = self.read(tid, ThreadFile::Stat, &mut buf)?;
        parse_stat(std::str::from_utf8(&buf[..n]).ok()?).map(|s| s.state)
    }

    /// CPU time thread `tid` has used so far, in ns (the kernel's
    /// `sum_exec_runtime`, updated at each scheduler tick and context
    /// switch); None if it is gone (or the kernel has no schedstat files).
    pub fn cpu_ns(&self, tid: i32) -> Option<u64> {
        let mut buf = [0u8; 128];
        let n = self.read(tid, ThreadFile::Schedstat, &mut buf)?;
        parse_schedstat(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// Reads one of thread `tid`'s files from its start, through a kept
    /// descriptor (a pread instead of open+read+close).
    fn read(&self, tid: i32, file: ThreadFile, buf: &mut [u8]) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tid, file);
        if !files.contains_key(&key) {
            if files.len() >= MAX_OPEN_STAT_FILES {
                files.clear();
            }
            let name = match file {
                ThreadFile::Stat => "stat",
                ThreadFile::Schedstat => "schedstat",
            };
            let path = format!("/proc/{}/task/{tid}/{name}", self.pid);
            files.insert(key, std::fs::File::open(path).ok()?);
        }
        // A file of a thread that exited fails to read (ESRCH): forget it,
        // a new thread may reuse the id.
        match files.get(&key).map(|f| f.read_at(buf, 0)) {
            Some(Ok(n)) if n > 0 => Some(n),
            _ => {
                files.remove(&key);
                None
            }
        }
    }
}

/// The on-CPU ns of `/proc/.../schedstat` ("on-CPU ns, waiting ns,
/// timeslices").
fn parse_schedstat(text: &str) -> Option<u64> {
    let mut fields = text.split_ascii_whitespace();
    let on_cpu = fields.next()?.parse().ok()?;
    fields.next()?.parse::<u64>().ok()?;
    Some(on_cpu)
}

/// One field of `/proc/PID/status`, e.g. `status_field(pid, "TracerPid:")`.
pub(crate) fn status_field(pid: i32, key: &str) -> Option<String> {
    status_field_at(&format!("/proc/{pid}/status"), key)
}

pub(crate) fn status_field_at(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}

pub(crate) fn list_tasks(pid: i32) -> std::io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        if let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// Maps an error reading `/proc/PID/<what>` of a process that was opened.
pub(crate) fn proc_error(pid: i32, e: std::io::Error, operation: &str, what: &str) -> Error {
    if is_gone(&e) {
        Error::ProcessExited { pid }
    } else if is_permission(&e) {
        Error::PermissionDenied {
            pid,
            operation: operation.into(),
        }
    } else {
        Error::io(format!("reading /proc/{pid}/{what}"), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let s =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 50";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_time, 987654);
        assert_eq!(st.cpu_ticks, 3);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn thread_states_follow_threads_and_forget_exited_ones() {
        let pid = std::process::id() as i32;
        let states = ThreadStates::new(pid);
        // SAFETY: gettid has no preconditions.
        let cpu = states
            .cpu_ns(unsafe { libc::gettid() })
            .expect("own schedstat");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        // SAFETY: as above.
        let later = states.cpu_ns(unsafe { libc::gettid() }).unwrap();
        assert!(later > cpu, "{cpu} -> {later}");
        assert_eq!(parse_schedstat("123 456 7\n"), Some(123));
        assert_eq!(parse_schedstat("garbage"), None);
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        assert_eq!(states.state(me), Some('R'));
        assert_eq!(
            states.state(me),
            Some('R'),
            "read again through the kept file"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while states.state(tid) != Some('S') && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(states.state(tid), Some('S'));
        stop_tx.send(()).unwrap();
        sleeper.join().unwrap();
        assert_eq!(states.state(tid), None, "an exited thread has no state");
        assert_eq!(states.state(i32::MAX), None);
    }

    #[test]
    fn splits_cmdline() {
        assert_eq!(split_nul(b"sleep\x001000\x00"), vec!["sleep", "1000"]);
        assert_eq!(split_nul(b""), Vec::<String>::new());
        assert_eq!(split_nul(b"a\x00\x00b\x00"), vec!["a", "", "b"]);
    }

    #[test]
    fn opens_self() {
        let me = std::process::id() as i32;
        let p = Process::open(me).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exe_path(), PathBuf::from(format!("/proc/{me}/exe")));
        assert_eq!(
            std::fs::canonicalize(p.exe_path()).unwrap(),
            std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap()
        );
        assert!(!p.cmdline().is_empty());
        let tids = p.threads().unwrap();
        assert!(tids.contains(&me));
        let states = p.thread_states().unwrap();
        assert!(states.iter().any(|&(t, _)| t == me));
    }

    #[test]
    fn rejects_bad_pids() {
        assert!(matches!(Process::open(0), Err(Error::NoSuchProcess(0))));
        assert!(matches!(Process::open(-5), Err(Error::NoSuchProcess(-5))));
    }
}
