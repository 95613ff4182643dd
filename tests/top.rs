//! `gospy top` end to end against the `cpusplit` fixture (3/4 of its CPU
//! time in `main.workA`, 1/4 in `main.workB`): plain snapshots when stdout
//! is not a terminal, and the full-screen view driven through a real
//! pseudo-terminal.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;

const FIXTURE: &str = "cpusplit";

/// Keeps the tests of this file from running two CPU-burning fixtures at
/// once: on a small machine they would distort each other's split.
fn exclusive() -> MutexGuard<'static, ()> {
    static CPU: Mutex<()> = Mutex::new(());
    CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `%Own` of `function` in every function table of `text` (plain mode).
fn own_percents(text: &str, function: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.split_whitespace().last() == Some(function))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Two plain snapshots of `gospy top extra...`: the functions split 3:1 in
/// each, the burning goroutine in the goroutine view, the target running.
fn plain_snapshots(extra: &[&str]) {
    let _cpu = exclusive();
    let bin = build_fixture(FIXTURE, &newest_toolchain(), BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let pid = target.pid().to_string();
    let started = Instant::now();
    let mut args = vec!["top", "--pid", &pid, "--interval", "1", "--iterations", "2"];
    args.extend_from_slice(extra);
    let out = run_gospy(&args);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let context = format!(
        "status {}, took {took:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{context}");
    assert!(
        took < Duration::from_secs(8),
        "2 refreshes of 1 s: {context}"
    );
    assert_eq!(text.matches("--- ").count(), 2, "two snapshots: {context}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in plain mode: {context}"
    );
    assert!(
        text.contains(&format!("gospy top: pid {pid} ")) && text.contains("Goroutines: "),
        "header: {context}"
    );

    // Both intervals: workA about three times workB.
    let a = own_percents(&text, "main.workA");
    let b = own_percents(&text, "main.workB");
    assert!(a.len() == 2 && b.len() == 2, "rows per interval: {context}");
    let (a, b): (f64, f64) = (a.iter().sum(), b.iter().sum());
    let share = a * 100.0 / (a + b);
    assert!(
        (60.0..=90.0).contains(&share),
        "main.workA has {share:.1}% of A+B %own, expected about 75: {context}"
    );

    // The goroutine view: the burning goroutine, running, in workA or workB
    // (without a pause its stack is not read).
    assert!(
        text.contains("Goroutines by current function:"),
        "goroutine view: {context}"
    );
    let nonblocking = extra.contains(&"--nonblocking");
    assert!(
        text.lines().any(|l| {
            let l = l.trim_start();
            let place = if nonblocking {
                l.contains("(running: stack not read)")
            } else {
                l.contains("main.workA") || l.contains("main.workB")
            };
            l.starts_with("1 ") && place && l.contains("1 running")
        }),
        "goroutine row: {context}"
    );
    assert_eq!(
        text.contains("target never paused (--nonblocking)"),
        nonblocking,
        "sampling line: {context}"
    );
    assert!(target.is_running_not_stopped(), "target left stopped");
}

#[test]
fn plain_snapshots_when_stdout_is_not_a_terminal() {
    plain_snapshots(&[]);
}

/// The same with perf events and pause-free goroutine views.
#[test]
fn plain_snapshots_with_nonblocking() {
    plain_snapshots(&["--nonblocking"]);
}

/// A screen fed with what gospy writes to the terminal: enough of a VT100
/// to follow ratatui's output (cursor moves, text, clears), with styles
/// ignored. It keeps the raw bytes too.
struct Screen {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    raw: Vec<u8>,
    /// Undecoded tail of the raw bytes.
    pending: Vec<u8>,
}

impl Screen {
    fn new(rows: usize, cols: usize) -> Screen {
        Screen {
            rows: vec![vec![' '; cols]; rows],
            row: 0,
            col: 0,
            raw: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        self.pending.extend_from_slice(bytes);
        let data = std::mem::take(&mut self.pending);
        let mut i = 0;
        while i < data.len() {
            match data[i] {
                0x1b => {
                    // CSI: ESC [ params final; other escapes are two bytes.
                    if i + 1 >= data.len() {
                        break;
                    }
                    if data[i + 1] != b'[' {
                        i += 2;
                        continue;
                    }
                    let Some(end) = data[i + 2..].iter().position(|b| (0x40..=0x7e).contains(b))
                    else {
                        break;
                    };
                    let params = String::from_utf8_lossy(&data[i + 2..i + 2 + end]).into_owned();
                    self.csi(&params, data[i + 2 + end]);
                    i += end + 3;
                }
                b'\r' => {
                    self.col = 0;
                    i += 1;
                }
                b'\n' => {
                    self.row = (self.row + 1).min(self.rows.len() - 1);
                    i += 1;
                }
                _ => {
                    let len = match data[i] {
                        b if b < 0x80 => 1,
                        b if b >= 0xf0 => 4,
                        b if b >= 0xe0 => 3,
                        _ => 2,
                    };
                    if i + len > data.len() {
                        break;
                    }
                    let c = std::str::from_utf8(&data[i..i + len])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .unwrap_or('?');
                    if !c.is_control() {
                        if let Some(cell) = self.rows[self.row].get_mut(self.col) {
                            *cell = c;
                        }
                        self.col += 1;
                    }
                    i += len;
                }
            }
        }
        self.pending = data[i..].to_vec();
    }

    fn csi(&mut self, params: &str, op: u8) {
        let nums: Vec<usize> = params.split(';').map(|p| p.parse().unwrap_or(0)).collect();
        let n = |i: usize| nums.get(i).copied().filter(|&v| v > 0).unwrap_or(1);
        match op {
            b'H' | b'f' => {
                self.row = (n(0) - 1).min(self.rows.len() - 1);
                self.col = n(1) - 1;
            }
            b'J' => {
                for row in &mut self.rows {
                    row.fill(' ');
                }
            }
            b'K' => {
                let col = self.col;
                for c in self.rows[self.row].iter_mut().skip(col) {
                    *c = ' ';
                }
            }
            _ => {}
        }
    }

    fn text(&self) -> String {
        self.rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// gospy running on the slave side of a pseudo-terminal; what it writes is
/// read on the master side into a [`Screen`].
struct PtyGospy {
    child: std::process::Child,
    master: std::fs::File,
    screen: Arc<Mutex<Screen>>,
}

const ROWS: u16 = 40;
const COLS: u16 = 160;

impl PtyGospy {
    fn spawn(args: &[&str]) -> PtyGospy {
        let mut master_fd = -1;
        let mut slave_fd = -1;
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the given ints; the
        // name and termios pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let mut cmd = Command::new(gospy_bin());
        cmd.args(args)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session whose controlling terminal is the pty (stdin), as a shell
        // in a terminal emulator has, so /dev/tty is the pty.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning gospy on a pty");
        // `cmd` holds the slave's descriptors until dropped; the master
        // only sees EOF (EIO) once every copy is closed.
        drop(cmd);
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(Screen::new(ROWS.into(), COLS.into())));
        let mut reader = master.try_clone().unwrap();
        let feed = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends with EIO once gospy and every copy of the slave are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock().unwrap().feed(&buf[..n]);
            }
        });
        PtyGospy {
            child,
            master,
            screen,
        }
    }

    /// Waits until the screen satisfies `ok`; panics with the screen if it
    /// does not within `timeout`.
    fn wait_screen(&mut self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.screen.lock().unwrap().text();
            if ok(&text) {
                return text;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no {what} within {timeout:?}; screen:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }
}

impl Drop for PtyGospy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn live_view_in_a_pseudo_terminal() {
    let _cpu = exclusive();
    let bin = build_fixture(FIXTURE, &newest_toolchain(), BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let pid = target.pid().to_string();
    let mut gospy = PtyGospy::spawn(&["top", "--pid", &pid, "--interval", "0.5"]);

    let screen = gospy.wait_screen("function table", Duration::from_secs(10), |s| {
        s.contains("main.workA") && s.contains("Functions by on-CPU samples")
    });
    assert!(
        screen.contains(&format!("gospy top: pid {pid} ")) && screen.contains("Goroutines: "),
        "header:\n{screen}"
    );
    let raw = String::from_utf8_lossy(&gospy.screen.lock().unwrap().raw).into_owned();
    assert!(raw.contains("\x1b[?1049h"), "alternate screen not entered");

    // `/` filter: only main.workB's row is left; Esc clears it.
    gospy.send("/workB\r");
    gospy.wait_screen("filtered table", Duration::from_secs(5), |s| {
        s.contains("filter \"workB\"") && s.contains("main.workB") && !s.contains("main.workA")
    });
    gospy.send("\x1b");
    gospy.wait_screen("unfiltered table", Duration::from_secs(5), |s| {
        !s.contains("filter \"") && s.contains("main.workA")
    });
    // Sort by name (column 3), pause and resume.
    gospy.send("3");
    gospy.wait_screen("sort by name", Duration::from_secs(5), |s| {
        s.contains("sorted by Function")
    });
    gospy.send(" ");
    gospy.wait_screen("paused header", Duration::from_secs(5), |s| {
        s.contains("[PAUSED]")
    });
    gospy.send(" ");
    gospy.wait_screen("resumed header", Duration::from_secs(5), |s| {
        !s.contains("[PAUSED]")
    });

    gospy.send("g");
    gospy.wait_screen("goroutine view", Duration::from_secs(5), |s| {
        s.contains("Goroutines by current function")
            && s.lines()
                .any(|l| l.contains("main.work") && l.contains("1 running"))
    });
    gospy.send("g");
    gospy.wait_screen("start-function grouping", Duration::from_secs(5), |s| {
        s.contains("Goroutines by start function") && s.contains("main.main")
    });

    gospy.send("q");
    let status = wait_exit(&mut gospy, Duration::from_secs(1));
    assert!(status.success(), "gospy exited with {status}");
    // Let the reader take the last bytes.
    std::thread::sleep(Duration::from_millis(100));
    let raw = String::from_utf8_lossy(&gospy.screen.lock().unwrap().raw).into_owned();
    let left = raw.rfind("\x1b[?1049l").expect("alternate screen not left");
    assert!(
        raw[left..].contains("\x1b[?25h") || raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l"),
        "cursor not shown again"
    );
    // The terminal is back in cooked mode: the line discipline echoes input
    // again (raw mode turned echo off).
    assert_terminal_cooked(&gospy.master);
    assert!(target.is_running_not_stopped(), "target left stopped");
}

/// The pty's line discipline has echo and canonical input back on.
fn assert_terminal_cooked(master: &std::fs::File) {
    // SAFETY: tcgetattr fills a termios for a valid descriptor; on a Linux
    // pty master it reports the pair's (shared) settings.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::tcgetattr(master.as_raw_fd(), &mut t) };
    assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    assert!(
        t.c_lflag & libc::ECHO != 0 && t.c_lflag & libc::ICANON != 0,
        "terminal left in raw mode (lflag {:#o})",
        t.c_lflag
    );
}

/// The target exiting under the live view: gospy restores the terminal,
/// says so, and exits 0. Ctrl-C (a key in raw mode) and SIGTERM are tested
/// on the way.
#[test]
fn live_view_ends_cleanly_when_the_target_exits() {
    let _cpu = exclusive();
    let bin = build_fixture(FIXTURE, &newest_toolchain(), BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let pid = target.pid().to_string();

    // Ctrl-C quits like q.
    let mut gospy = PtyGospy::spawn(&["top", "--pid", &pid, "--interval", "0.3"]);
    gospy.wait_screen("function table", Duration::from_secs(10), |s| {
        s.contains("main.workA")
    });
    gospy.send("\x03");
    let status = wait_exit(&mut gospy, Duration::from_secs(1));
    assert!(status.success(), "after Ctrl-C: {status}");

    // So does SIGTERM.
    let mut gospy = PtyGospy::spawn(&["top", "--pid", &pid, "--interval", "0.3"]);
    gospy.wait_screen("function table", Duration::from_secs(10), |s| {
        s.contains("main.workA")
    });
    // SAFETY: kill(2) on the pid of a child not yet reaped.
    unsafe { libc::kill(gospy.child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut gospy, Duration::from_secs(1));
    assert!(status.success(), "after SIGTERM: {status}");
    assert_terminal_cooked(&gospy.master);

    let mut gospy = PtyGospy::spawn(&["top", "--pid", &pid, "--interval", "0.3"]);
    gospy.wait_screen("function table", Duration::from_secs(10), |s| {
        s.contains("main.workA")
    });
    drop(target);
    let status = wait_exit(&mut gospy, Duration::from_secs(3));
    assert!(status.success(), "after the target exited: {status}");
    std::thread::sleep(Duration::from_millis(100));
    let raw = String::from_utf8_lossy(&gospy.screen.lock().unwrap().raw).into_owned();
    let left = raw.rfind("\x1b[?1049l").expect("alternate screen not left");
    assert!(
        raw[left..].contains(&format!("process {pid} exited")),
        "no exit message after the view: {:?}",
        &raw[left..]
    );
    assert_terminal_cooked(&gospy.master);
}

/// Waits for gospy to exit; panics with the screen after `timeout`.
fn wait_exit(gospy: &mut PtyGospy, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = gospy.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "gospy still running after {timeout:?}; screen:\n{}",
            gospy.screen.lock().unwrap().text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
