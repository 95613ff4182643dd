//! Tests of `gospy::process` against real processes: plain system programs
//! (`sleep`, `python3`) and small C programs built with gcc when it exists.
//! They need ptrace permission over children (root, or yama ptrace_scope
//! <= 1).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gospy::process::{
    self, maps, pause, FirstLoad, Memory, MemorySnapshot, Process, ProcessMemory, StopKind,
};
use gospy::Error;

/// A child process killed and reaped on drop.
struct Target {
    child: Child,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Target {
    fn spawn(cmd: &mut Command) -> Target {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        // A binary this test process just wrote can be "busy" for a moment:
        // another test's fork may still hold the write descriptor until its
        // exec (ETXTBSY). Retry briefly.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.expect("spawn target"),
            }
        };
        let stdout = child.stdout.take().map(BufReader::new);
        Target { child, stdout }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads stdout lines until one contains `prefix`; returns the line from
    /// there on.
    fn wait_line(&mut self, prefix: &str) -> String {
        let out = self.stdout.as_mut().expect("stdout");
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("read target stdout");
            assert!(n > 0, "target closed stdout before printing {prefix:?}");
            if let Some(at) = line.find(prefix) {
                return line[at..].trim_end().to_string();
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python(script: &str, args: &[&str]) -> Target {
    Target::spawn(Command::new("python3").arg("-c").arg(script).args(args))
}

/// Task states (`/proc/PID/task/*/stat`) of `pid`.
fn task_states(pid: i32) -> Vec<(i32, char)> {
    Process::open(pid).unwrap().thread_states().unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn none_traced(pid: i32) -> bool {
    task_states(pid).iter().all(|&(_, s)| s != 't')
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15, counted from field 3 (the state) at index 0.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

const THREADS_PY: &str = r#"
import threading, time
def spin():
    x = 0
    while True:
        x += 1
def sleeper():
    while True:
        time.sleep(0.001)
for f in [spin, sleeper, sleeper, sleeper]:
    threading.Thread(target=f, daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(0.01)
"#;

#[test]
fn pause_stops_every_thread_and_resume_restarts_them() {
    let mut t = python(THREADS_PY, &[]);
    t.wait_line("ready");
    let pid = t.pid();
    let proc = Process::open(pid).unwrap();
    assert_eq!(proc.threads().unwrap().len(), 5);
    let maps = proc.maps().unwrap();

    let p = proc.pause().unwrap();
    let tids = proc.threads().unwrap();
    assert_eq!(p.threads().len(), tids.len());
    for &(tid, state) in &task_states(pid) {
        assert_eq!(state, 't', "thread {tid} not stopped");
    }
    for th in p.threads() {
        assert!(tids.contains(&th.tid));
        assert!(
            matches!(th.stop, StopKind::Interrupt | StopKind::Signal(_)),
            "{:?}",
            th.stop
        );
        let regs = th.regs.expect("registers");
        assert_eq!(p.registers(th.tid), Some(&regs));
        assert_ne!(regs.fs_base, 0);
        let code = maps
            .iter()
            .find(|m| m.contains(regs.rip))
            .expect("rip mapped");
        assert!(code.is_executable(), "rip {:#x} in {code:?}", regs.rip);
        let stack = maps
            .iter()
            .find(|m| m.contains(regs.rsp))
            .expect("rsp mapped");
        assert!(stack.is_writable(), "rsp {:#x} in {stack:?}", regs.rsp);
    }
    // The spinning thread makes no progress while paused.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_ticks(pid) <= before + 1, "the target ran while paused");
    assert!(p.stop_latency() < Duration::from_millis(500));
    let stopped_for = p.resume();
    assert!(stopped_for >= Duration::from_millis(300));

    wait_until("threads to run again", Duration::from_secs(5), || {
        none_traced(pid)
    });
    let before = cpu_ticks(pid);
    wait_until("the target to use CPU", Duration::from_secs(5), || {
        cpu_ticks(pid) > before + 2
    });
    assert!(proc.is_alive());
}

#[test]
fn dropping_a_pause_detaches() {
    let mut t = python(THREADS_PY, &[]);
    t.wait_line("ready");
    let pid = t.pid();
    {
        let _p = pause(pid).unwrap();
        assert!(task_states(pid).iter().all(|&(_, s)| s == 't'));
    }
    wait_until("threads to run again", Duration::from_secs(5), || {
        none_traced(pid)
    });

    // A panic unwinding through the pause detaches too.
    let r = std::panic::catch_unwind(|| {
        let _p = pause(pid).unwrap();
        panic!("boom");
    });
    assert!(r.is_err());
    wait_until("threads to run again", Duration::from_secs(5), || {
        none_traced(pid)
    });
}

#[test]
fn many_pauses_of_a_process_creating_threads() {
    // Threads start and end all the time: every pause must stop all of
    // those that exist, and leave none stopped.
    let mut t = python(
        r#"
import threading, time
def short():
    time.sleep(0.0005)
def churn():
    while True:
        ts = [threading.Thread(target=short) for _ in range(4)]
        for x in ts: x.start()
        for x in ts: x.join()
threading.Thread(target=churn, daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(0.01)
"#,
        &[],
    );
    t.wait_line("ready");
    let pid = t.pid();
    for _ in 0..100 {
        let p = pause(pid).unwrap();
        let states = task_states(pid);
        for &(tid, s) in &states {
            assert!(
                s == 't' || s == 'Z' || s == 'X',
                "thread {tid} in state {s} while paused"
            );
            if s == 't' {
                assert!(
                    p.threads().iter().any(|th| th.tid == tid),
                    "thread {tid} unknown"
                );
            }
        }
        p.resume();
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_until("threads to run again", Duration::from_secs(5), || {
        none_traced(pid)
    });
}

#[test]
fn signal_sent_while_paused_is_delivered_after_resume() {
    let dir = tempdir("signal");
    let flag = dir.join("got-usr1");
    let mut t = python(
        r#"
import signal, sys, threading, time
path = sys.argv[1]
def handler(sig, frame):
    open(path, "w").write("got")
signal.signal(signal.SIGUSR1, handler)
threading.Thread(target=lambda: [time.sleep(0.01) for _ in iter(int, 1)], daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(0.01)
"#,
        &[flag.to_str().unwrap()],
    );
    t.wait_line("ready");
    let pid = t.pid();
    let p = pause(pid).unwrap();
    // SAFETY: kill(2) on our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!flag.exists(), "handler ran while paused");
    p.resume();
    wait_until("the SIGUSR1 handler", Duration::from_secs(5), || {
        flag.exists()
    });
}

#[test]
fn signal_caught_by_the_stop_is_reinjected() {
    // The signal arrives after the attach and before the interrupt: the
    // main thread reports a signal-delivery-stop, and the detach must
    // deliver the signal, or the handler never runs.
    let dir = tempdir("reinject");
    let flag = dir.join("got-usr1");
    let mut t = python(
        r#"
import signal, sys, time
path = sys.argv[1]
def handler(sig, frame):
    open(path, "w").write("got")
signal.signal(signal.SIGUSR1, handler)
print("ready", flush=True)
while True:
    time.sleep(0.01)
"#,
        &[flag.to_str().unwrap()],
    );
    t.wait_line("ready");
    let pid = t.pid();
    let p = process::ptrace::pause_with_hook(pid, Duration::from_secs(5), &mut || {
        // SAFETY: tgkill(2) on the main thread of our child.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1) };
        assert_eq!(r, 0);
        std::thread::sleep(Duration::from_millis(100));
    })
    .unwrap();
    let main = p.threads().iter().find(|th| th.tid == pid).unwrap();
    assert_eq!(main.stop, StopKind::Signal(libc::SIGUSR1));
    assert!(main.regs.is_some());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!flag.exists(), "handler ran while paused");
    p.resume();
    wait_until("the re-injected SIGUSR1", Duration::from_secs(5), || {
        flag.exists()
    });
}

/// Signal ping-pong: a thread sends SIGUSR1 to the main thread whenever the
/// previous one was handled. A signal lost by a pause (arriving during the
/// stop, not re-injected on detach) stops the ping-pong for good.
const PINGPONG_C: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
static volatile unsigned long handled, sent;
static pid_t main_tid;
static void on_usr1(int sig) { (void)sig; __atomic_add_fetch(&handled, 1, __ATOMIC_SEQ_CST); }
static void *sender(void *arg) {
    (void)arg;
    for (;;) {
        if (__atomic_load_n(&handled, __ATOMIC_SEQ_CST) == sent) {
            __atomic_add_fetch(&sent, 1, __ATOMIC_SEQ_CST);
            syscall(SYS_tgkill, getpid(), main_tid, SIGUSR1);
        }
    }
    return 0;
}
static void *idle(void *arg) { (void)arg; for (;;) pause(); return 0; }
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, 0);
    main_tid = syscall(SYS_gettid);
    pthread_t t;
    pthread_create(&t, 0, sender, 0);
    pthread_create(&t, 0, idle, 0);
    printf("addr %lx %lx\n", (unsigned long)&handled, (unsigned long)&sent);
    fflush(stdout);
    for (;;) pause();
}
"#;

#[test]
fn signals_arriving_during_the_stop_are_reinjected() {
    let Some(exe) = build_c("pingpong", PINGPONG_C, &[]) else {
        return;
    };
    let mut t = Target::spawn(&mut Command::new(&exe));
    let line = t.wait_line("addr ");
    let mut it = line.split(' ').skip(1);
    let handled_addr = u64::from_str_radix(it.next().unwrap(), 16).unwrap();
    let sent_addr = u64::from_str_radix(it.next().unwrap(), 16).unwrap();
    let pid = t.pid();
    let mem = ProcessMemory::new(pid);
    let mut signal_stops = 0;
    for i in 0..300 {
        let p = pause(pid).unwrap();
        signal_stops += p
            .threads()
            .iter()
            .filter(|th| th.stop == StopKind::Signal(libc::SIGUSR1))
            .count();
        // While paused, the counters are stable; read them from a snapshot.
        let mut snap = MemorySnapshot::new();
        snap.request(handled_addr, 8);
        snap.request(sent_addr, 8);
        snap.fetch(&mem).unwrap();
        let (h, s) = (
            snap.read_u64(handled_addr).unwrap(),
            snap.read_u64(sent_addr).unwrap(),
        );
        assert!(s == h || s == h + 1, "handled {h} sent {s}");
        p.resume();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let h0 = mem.read_u64(handled_addr).unwrap();
    wait_until("the ping-pong to go on", Duration::from_secs(5), || {
        mem.read_u64(handled_addr).unwrap() > h0 + 1000
    });
    eprintln!("{signal_stops} of 300 pauses caught SIGUSR1 in a signal-delivery-stop");
}

#[test]
fn stopped_process_stays_stopped() {
    let t = Target::spawn(Command::new("sleep").arg("1000"));
    let pid = t.pid();
    wait_exec(pid, "sleep");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_until("SIGSTOP", Duration::from_secs(5), || {
        task_states(pid)[0].1 == 'T'
    });
    let p = pause(pid).unwrap();
    assert!(p.group_stopped(), "{:?}", p.threads());
    assert!(p.threads()[0].regs.is_some());
    p.resume();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(task_states(pid)[0].1, 'T');
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_until("SIGCONT", Duration::from_secs(5), || {
        task_states(pid)[0].1 == 'S'
    });
}

#[test]
fn nonexistent_process() {
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = (2..pid_max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    assert!(matches!(Process::open(pid), Err(Error::NoSuchProcess(p)) if p == pid));
    assert!(matches!(pause(pid), Err(Error::NoSuchProcess(p)) if p == pid));
}

#[test]
fn zombie_process() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    wait_until("the child to exit", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
            .unwrap_or(false)
    });
    assert!(matches!(Process::open(pid), Err(Error::Zombie(p)) if p == pid));
    assert!(matches!(pause(pid), Err(Error::Zombie(p)) if p == pid));
    child.wait().unwrap();
}

#[test]
fn process_info() {
    let t = Target::spawn(Command::new("sleep").args(["1000", "2000"]));
    wait_exec(t.pid(), "sleep");
    let proc = Process::open(t.pid()).unwrap();
    assert_eq!(proc.cmdline(), vec!["sleep", "1000", "2000"]);
    assert!(
        proc.exe_display().ends_with("/sleep"),
        "{}",
        proc.exe_display()
    );
    assert_eq!(
        proc.exe_path(),
        PathBuf::from(format!("/proc/{}/exe", t.pid()))
    );
    assert_eq!(proc.threads().unwrap(), vec![t.pid()]);
    assert!(proc.start_time() > 0);
    assert!(proc.is_alive());
    drop(t);
    assert!(!proc.is_alive());
}

#[test]
fn deleted_executable_is_still_reachable() {
    let dir = tempdir("deleted");
    let exe = dir.join("mysleep");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let t = Target::spawn(Command::new(&exe).arg("1000"));
    wait_exec(t.pid(), "mysleep");
    std::fs::remove_file(&exe).unwrap();
    let proc = Process::open(t.pid()).unwrap();
    assert!(
        proc.exe_display().ends_with("mysleep (deleted)"),
        "{}",
        proc.exe_display()
    );
    let bytes = std::fs::read(proc.exe_path()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    let (first, _, _) = elf_first_load(&proc.exe_path());
    let bias = proc.load_bias_for(first).unwrap();
    assert_eq!(bias, auxv_bias(t.pid(), &proc.exe_path()));
}

/// `(first PT_LOAD, e_phoff, e_type)` of an ELF64 file, parsed here
/// independently of gospy's ELF reader.
fn elf_first_load(path: &Path) -> (FirstLoad, u64, u16) {
    let b = std::fs::read(path).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64_at(0x20);
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    let first = (0..phnum)
        .map(|i| phoff as usize + i * phentsize)
        .filter(|&o| u32_at(o) == 1) // PT_LOAD
        .map(|o| FirstLoad {
            offset: u64_at(o + 8),
            vaddr: u64_at(o + 16),
        })
        .min_by_key(|l| l.offset)
        .unwrap();
    (first, phoff, u16_at(0x10))
}

/// Bias from AT_PHDR in the auxv, computed here.
fn auxv_bias(pid: i32, exe: &Path) -> u64 {
    let (first, phoff, _) = elf_first_load(exe);
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap();
    let at_phdr = auxv
        .chunks_exact(16)
        .find(|c| u64::from_le_bytes(c[..8].try_into().unwrap()) == 3)
        .map(|c| u64::from_le_bytes(c[8..].try_into().unwrap()))
        .unwrap();
    at_phdr - (first.vaddr + phoff - first.offset)
}

#[test]
fn load_bias_of_a_pie() {
    let t = Target::spawn(Command::new("/bin/sleep").arg("1000"));
    let pid = t.pid();
    wait_exec(pid, "sleep");
    let proc = Process::open(pid).unwrap();
    let (first, _, e_type) = elf_first_load(&proc.exe_path());
    assert_eq!(e_type, 3, "/bin/sleep is expected to be a PIE (ET_DYN)");
    let bias = proc.load_bias_for(first).unwrap();
    assert_ne!(bias, 0);
    assert_eq!(bias % 4096, 0);
    assert_eq!(bias, auxv_bias(pid, &proc.exe_path()));
    // The mapping holding the first PT_LOAD starts at bias + its vaddr.
    let m = proc
        .maps()
        .unwrap()
        .into_iter()
        .find(|m| m.start == bias + (first.vaddr & !0xfff))
        .expect("mapping at the bias");
    assert_eq!(m.offset, first.offset & !0xfff);
    assert!(m.path.ends_with("sleep"));
    // The program headers, read from memory, are those of the file.
    let file = std::fs::read(proc.exe_path()).unwrap();
    let mut hdr = [0u8; 64];
    ProcessMemory::new(pid)
        .read(bias + first.vaddr, &mut hdr)
        .unwrap();
    assert_eq!(
        &hdr[..],
        &file[first.offset as usize..first.offset as usize + 64]
    );
    // Through gospy's ELF reader too.
    let image = gospy::binary::ElfImage::open(&proc.exe_path()).unwrap();
    assert_eq!(proc.load_bias(&image).unwrap(), bias);
}

#[test]
fn load_bias_of_a_non_pie_is_zero() {
    let Some(exe) = build_c(
        "nopie",
        "#include <unistd.h>\nint main(void){for(;;)pause();}\n",
        &["-no-pie"],
    ) else {
        return;
    };
    let t = Target::spawn(&mut Command::new(&exe));
    let pid = t.pid();
    wait_exec(pid, "nopie");
    let proc = Process::open(pid).unwrap();
    let (first, _, e_type) = elf_first_load(&exe);
    assert_eq!(e_type, 2);
    assert_eq!(proc.load_bias_for(first).unwrap(), 0);
    let exe_id = maps::ExeIdentity::of_process(pid);
    assert!(exe_id.dev.is_some() && exe_id.inode.is_some());
}

#[test]
fn batched_reads_across_an_unmapped_page() {
    // A child maps three pages and unmaps the middle one; we read around it.
    let t_script = r#"
import mmap, ctypes, sys, time
m = mmap.mmap(-1, 3 * 4096)
for i in range(3 * 4096):
    m[i] = i % 251
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None)
assert libc.munmap(ctypes.c_void_p(base + 4096), 4096) == 0
print("base %x" % base, flush=True)
while True:
    time.sleep(1)
"#;
    let mut t = python(t_script, &[]);
    let line = t.wait_line("base ");
    let base = u64::from_str_radix(&line[5..], 16).unwrap();
    let mem = ProcessMemory::new(t.pid());
    let want = |off: u64| (off % 251) as u8;

    // Single reads.
    assert_eq!(Memory::read_u8(&mem, base + 10), Some(want(10)));
    assert!(matches!(
        mem.read_u64(base + 4096),
        Err(Error::Memory { .. })
    ));

    // Packed reads: the failing ranges do not stop the others.
    let ranges = [
        (base, 16),
        (base + 4090, 16),
        (base + 8192, 16),
        (base + 6000, 4),
        (base + 12000, 8),
    ];
    let mut out = vec![0u8; 60];
    let mut ok = [false; 5];
    mem.read_packed(&ranges, &mut out, &mut ok).unwrap();
    assert_eq!(ok, [true, false, true, false, true]);
    assert_eq!(out[32..48], (8192..8208).map(want).collect::<Vec<_>>()[..]);

    // A snapshot keeps what precedes the hole and what follows it.
    let mut snap = MemorySnapshot::new();
    snap.request(base, 4096);
    snap.request(base + 4096, 4096);
    snap.request(base + 8192, 4096);
    let st = snap.fetch(&mem).unwrap();
    assert_eq!(st.failed_ranges, 1);
    assert_eq!(st.bytes, 8192);
    assert_eq!(snap.missing(), &[(base + 4096, base + 8192)]);
    assert_eq!(
        snap.get(base, 4096).unwrap(),
        &(0..4096).map(want).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        snap.get(base + 8192, 4096).unwrap(),
        &(8192..12288).map(want).collect::<Vec<_>>()[..]
    );
    assert!(snap.get(base + 4000, 200).is_none());
    let dynmem: &dyn Memory = &snap;
    assert_eq!(
        dynmem.read_u32(base + 8192),
        Some(u32::from_le_bytes([
            want(8192),
            want(8193),
            want(8194),
            want(8195)
        ]))
    );

    // Once the process is gone, reads say so.
    let pid = t.pid();
    drop(t);
    assert!(matches!(mem.read_u64(base), Err(Error::ProcessExited { pid: p }) if p == pid));
}

const VFORK_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>
static void *vforker(void *arg) {
    (void)arg;
    pid_t c = vfork();
    if (c == 0) { sleep(2); _exit(0); }
    waitpid(c, 0, 0);
    for (;;) pause();
    return 0;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, vforker, 0);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
"#;

#[test]
fn thread_that_cannot_stop_does_not_hang_the_pause() {
    // A vfork parent waits in a killable sleep that PTRACE_INTERRUPT does
    // not break: it only stops when the child exits, 2 s later.
    let Some(exe) = build_c("vfork", VFORK_C, &[]) else {
        return;
    };
    let mut t = Target::spawn(&mut Command::new(&exe));
    t.wait_line("ready");
    let pid = t.pid();
    let blocked = {
        let mut tid = 0;
        wait_until("the vfork", Duration::from_secs(5), || {
            task_states(pid)
                .iter()
                .find(|&&(_, s)| s == 'D')
                .map(|&(t, _)| tid = t)
                .is_some()
        });
        tid
    };
    let t0 = Instant::now();
    let p = process::ptrace::pause_with_timeout(pid, Duration::from_millis(200)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    for th in p.threads() {
        if th.tid == blocked {
            assert_eq!(th.stop, StopKind::NotStopped);
            assert!(th.regs.is_none());
        } else {
            assert_eq!(th.stop, StopKind::Interrupt);
            assert!(th.regs.is_some());
        }
    }
    p.resume();
    wait_until("the main thread to run", Duration::from_secs(5), || {
        task_states(pid)
            .iter()
            .all(|&(tid, s)| tid == blocked || s != 't')
    });
    // When the vfork ends, the pending interrupt stops the thread; the next
    // pause on this thread takes it over and lets it go with the rest.
    wait_until("the vfork child to exit", Duration::from_secs(5), || {
        task_states(pid)
            .iter()
            .any(|&(tid, s)| tid == blocked && s == 't')
    });
    // The vfork child's exit may also have queued a SIGCHLD for that
    // thread: it then shows as a signal stop (re-injected on detach).
    let p = pause(pid).unwrap();
    for th in p.threads() {
        assert!(
            matches!(th.stop, StopKind::Interrupt | StopKind::Signal(_)) && th.regs.is_some(),
            "thread {} {:?}",
            th.tid,
            th.stop
        );
    }
    p.resume();
    wait_until("all threads to run", Duration::from_secs(5), || {
        none_traced(pid)
    });
}

/// Run as a child by `unprivileged_access_is_denied_clearly` with
/// GOSPY_TEST_UNPRIV_HELPER=<pid>: drops root and tries everything.
#[test]
fn helper_unprivileged() {
    let Ok(pid) = std::env::var("GOSPY_TEST_UNPRIV_HELPER") else {
        return;
    };
    let pid: i32 = pid.parse().unwrap();
    // SAFETY: dropping privileges of this helper process.
    unsafe {
        assert_eq!(libc::setgid(65534), 0);
        assert_eq!(libc::setuid(65534), 0);
    }
    let show = |what: &str, e: Option<Error>| match e {
        Some(Error::PermissionDenied { operation, .. }) => {
            println!("RESULT {what} denied: {operation}")
        }
        other => println!("RESULT {what} other: {other:?}"),
    };
    show("open", Process::open(pid).err());
    show("pause", pause(pid).err());
    show("read", ProcessMemory::new(pid).read_u64(0x1000).err());
    let mut snap = MemorySnapshot::new();
    snap.request(0x1000, 8);
    show("fetch", snap.fetch(&ProcessMemory::new(pid)).err());
    println!("RESULT done");
    std::io::stdout().flush().unwrap();
}

#[test]
fn unprivileged_access_is_denied_clearly() {
    // SAFETY: getuid(2).
    // Not a skip: the suite runs as root (scripts/test, CI); without root
    // this test cannot drop privileges and must say so.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test needs root to drop privileges to an unprivileged user"
    );
    let t = Target::spawn(Command::new("sleep").arg("1000"));
    let mut helper = Target::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_unprivileged",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GOSPY_TEST_UNPRIV_HELPER", t.pid().to_string()),
    );
    let mut results = Vec::new();
    loop {
        let line = helper.wait_line("RESULT ");
        if line == "RESULT done" {
            break;
        }
        results.push(line);
    }
    assert_eq!(
        results,
        [
            "RESULT open denied: read the executable of",
            "RESULT pause denied: attach to",
            "RESULT read denied: read the memory of",
            "RESULT fetch denied: read the memory of",
        ]
    );
}

/// Not a test by itself: run as a child by `killing_the_tracer_lets_the_target_run`
/// with GOSPY_TEST_PAUSE_HELPER=<pid>: pauses that process, says so, and
/// waits to be killed.
#[test]
fn helper_pause_and_hang() {
    let Ok(pid) = std::env::var("GOSPY_TEST_PAUSE_HELPER") else {
        return;
    };
    let p = pause(pid.parse().unwrap()).unwrap();
    println!("PAUSED {} threads", p.threads().len());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn killing_the_tracer_lets_the_target_run() {
    let mut t = python(THREADS_PY, &[]);
    t.wait_line("ready");
    let pid = t.pid();
    let mut helper = Target::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_pause_and_hang",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GOSPY_TEST_PAUSE_HELPER", pid.to_string()),
    );
    helper.wait_line("PAUSED");
    assert!(task_states(pid).iter().all(|&(_, s)| s == 't'));

    // Another tracer holds it: a clear error, and no harm done.
    let tracer = process::is_traced_by_other(pid).expect("traced by the helper");
    assert_eq!(tracer, helper.pid());
    match pause(pid) {
        Err(Error::Other(msg)) => {
            assert!(msg.contains("already being traced"), "{msg}");
            assert!(msg.contains(&tracer.to_string()), "{msg}");
        }
        other => panic!("expected a 'traced by another' error, got {other:?}"),
    }
    assert!(task_states(pid).iter().all(|&(_, s)| s == 't'));

    // SIGKILL gives gospy no chance to detach: the kernel does it.
    helper.child.kill().unwrap();
    helper.child.wait().unwrap();
    wait_until("threads to run again", Duration::from_secs(5), || {
        none_traced(pid)
    });
    let before = cpu_ticks(pid);
    wait_until("the target to use CPU", Duration::from_secs(5), || {
        cpu_ticks(pid) > before + 2
    });
    assert_eq!(process::is_traced_by_other(pid), None);
}

/// Waits until the exec of a program whose path ends in `name` is done:
/// `/proc/PID/exe` changes before the new segments are mapped.
fn wait_exec(pid: i32, name: &str) {
    wait_until("exec", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|m| m.lines().any(|l| l.ends_with(name) && l.contains(" r-xp ")))
    });
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gospy-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds a C program with gcc; None (and a note) when gcc is missing.
fn build_c(name: &str, source: &str, flags: &[&str]) -> Option<PathBuf> {
    let dir = tempdir(name);
    let src = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let out = match Command::new("gcc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(flags)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping: gcc not available ({e})");
            return None;
        }
    };
    if !out.status.success() {
        panic!(
            "gcc failed for {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(exe)
}

/// `pause_threads` stops exactly the threads asked for (of this process),
/// leaves the others running, ignores tids that are not the target's, and
/// resumes what it stopped.
#[test]
fn pause_threads_stops_only_the_chosen_threads() {
    let mut t = python(THREADS_PY, &[]);
    t.wait_line("ready");
    let pid = t.pid();
    let tids: Vec<i32> = Process::open(pid)
        .unwrap()
        .threads()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(tids.len(), 5);
    let chosen = [tids[1], tids[3], std::process::id() as i32];
    let p = gospy::process::ptrace::pause_threads(pid, &chosen).unwrap();
    let stopped: Vec<i32> = p.threads().iter().map(|th| th.tid).collect();
    assert_eq!(stopped, vec![tids[1], tids[3]]);
    for (tid, state) in task_states(pid) {
        let expect_stopped = tid == tids[1] || tid == tids[3];
        assert_eq!(state == 't', expect_stopped, "thread {tid} is {state}");
    }
    assert!(p.registers(tids[1]).is_some() && p.registers(tids[0]).is_none());
    p.resume();
    wait_until("threads to run again", Duration::from_secs(5), || {
        none_traced(pid)
    });
    // Nothing of the target at all: an empty pause, not an error.
    let empty = gospy::process::ptrace::pause_threads(pid, &[]).unwrap();
    assert!(empty.threads().is_empty());
    empty.resume();
}
