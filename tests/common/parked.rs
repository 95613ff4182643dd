//! What the `parked` fixture (testdata/fixtures/parked) parks, and what the
//! runtime's traceback says about each goroutine, per Go version.

use super::build::BuildMode;
use super::toolchain::Toolchain;
use super::traceback::RuntimeGoroutine;

/// One kind of parked goroutine in the `parked` fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// A function that appears (as the runtime prints it) in exactly this
    /// goroutine's stack: the innermost user function, or the inlined /
    /// closure / generic / method frame the goroutine is about.
    pub function: &'static str,
    /// How it parks.
    pub how: &'static str,
    /// The state the runtime prints in the header (`[chan receive]`).
    pub state: &'static str,
    /// The header says `locked to thread`.
    pub locked_to_thread: bool,
    /// Frames (outer to the `function`) that must follow it directly, e.g.
    /// the noinline caller of an inlined helper.
    pub callers: &'static [&'static str],
    /// The runtime prints `function` as an inlined frame (no pc offset).
    pub inlined: bool,
    /// pprof labels set on the goroutine.
    pub labels: &'static [(&'static str, &'static str)],
}

impl Parked {
    /// Find this goroutine in a runtime traceback.
    pub fn find<'a>(&self, gs: &'a [RuntimeGoroutine]) -> Option<&'a RuntimeGoroutine> {
        gs.iter().find(|g| g.has_function(self.function))
    }
}

fn p(function: &'static str, how: &'static str, state: &'static str) -> Parked {
    Parked {
        function,
        how,
        state,
        locked_to_thread: false,
        callers: &[],
        inlined: false,
        labels: &[],
    }
}

/// The CPU burners' call chain, innermost first (two goroutines run it; the
/// runtime sees them `running` or `runnable`).
pub const BURN_CHAIN: [&str; 3] = ["main.burnInner", "main.burnMiddle", "main.burnOuter"];

/// How many burner goroutines the fixture starts by default.
pub const BURNERS: usize = 2;

/// Functions of the fixture's main goroutine (goid 1): it serves SIGUSR1 in
/// `main.signalLoop`, parked on `chan receive` except while it dumps.
pub const MAIN_LOOP: &str = "main.signalLoop";

/// Every parked goroutine the `parked` fixture has when built with `tc` in
/// `mode`, with the state the runtime prints for it.
pub fn parked_catalogue(tc: &Toolchain, mode: BuildMode) -> Vec<Parked> {
    let go121 = tc.at_least(21);
    let go124 = tc.at_least(24);
    let mut v = vec![
        p("main.parkChanRecv", "<-ch, never sent", "chan receive"),
        p("main.parkChanSend", "ch <- 1, never received", "chan send"),
        p(
            "main.parkNilChanRecv",
            "<-nilChan",
            "chan receive (nil chan)",
        ),
        p(
            "main.parkNilChanSend",
            "nilChan <- 1",
            "chan send (nil chan)",
        ),
        p("main.parkSelect", "select with 3 cases", "select"),
        p("main.parkSelectNoCases", "select {}", "select (no cases)"),
        p(
            "main.parkMutexLock",
            "sync.Mutex.Lock on a mutex main holds",
            if go121 {
                "sync.Mutex.Lock"
            } else {
                "semacquire"
            },
        ),
        p(
            "main.parkRWMutexRLock",
            "RWMutex.RLock while write-locked",
            if go121 {
                "sync.RWMutex.RLock"
            } else {
                "semacquire"
            },
        ),
        p(
            "main.parkRWMutexLock",
            "RWMutex.Lock while read-locked",
            if go121 {
                "sync.RWMutex.Lock"
            } else {
                "semacquire"
            },
        ),
        p(
            "main.parkCondWait",
            "sync.Cond.Wait, never signalled",
            "sync.Cond.Wait",
        ),
        p(
            "main.parkWaitGroupWait",
            "sync.WaitGroup.Wait with counter 1",
            if go124 {
                "sync.WaitGroup.Wait"
            } else {
                "semacquire"
            },
        ),
        p("main.parkSleep", "time.Sleep(time.Hour) in a loop", "sleep"),
        p(
            "main.parkNetRead",
            "Read on an accepted 127.0.0.1 TCP conn",
            "IO wait",
        ),
        p(
            "main.parkNetAccept",
            "Accept on a 127.0.0.1 listener",
            "IO wait",
        ),
        p(
            "main.parkRawSyscall",
            "syscall.Read on a blocking pipe",
            "syscall",
        ),
        Parked {
            locked_to_thread: true,
            ..p(
                "main.parkLockedThread",
                "LockOSThread then <-ch",
                "chan receive",
            )
        },
        p(
            "main.spawnClosure.func1",
            "go func(){ <-ch }()",
            "chan receive",
        ),
        Parked {
            callers: &["main.runPtrMethod"],
            ..p(
                "main.(*waiter).parkPtr",
                "pointer-receiver method <-ch",
                "chan receive",
            )
        },
        Parked {
            callers: &["main.runValueMethod"],
            ..p(
                "main.waiter.parkValue",
                "value-receiver method <-ch",
                "chan receive",
            )
        },
        Parked {
            callers: &["main.parkInlined"],
            inlined: true,
            ..p(
                "main.waitOn",
                "inlined helper <-ch in noinline parkInlined",
                "chan receive",
            )
        },
        Parked {
            callers: &["main.recurse"],
            ..p(
                "main.recurse",
                "recursion 60 deep, then <-ch",
                "chan receive",
            )
        },
        Parked {
            callers: &["runtime/pprof.Do", "main.parkLabeled"],
            labels: &[("tier", "gold"), ("worker", "7")],
            ..p(
                "main.parkLabeled.func1",
                "<-ch inside pprof.Do",
                "chan receive",
            )
        },
        Parked {
            callers: &["panic", "main.parkInPanic"],
            ..p(
                "main.parkInPanic.func1",
                "<-ch in a deferred call during panic",
                "chan receive",
            )
        },
        p(
            "main.parkGoWithArgs",
            "go parkGoWithArgs(ch, 42) (gowrap in 1.22+)",
            "chan receive",
        ),
    ];
    if tc.at_least(18) {
        v.push(Parked {
            callers: &["main.runGeneric"],
            ..p("main.parkGeneric[...]", "generic func <-ch", "chan receive")
        });
        v.push(Parked {
            callers: &["main.runGenericMethod"],
            ..p(
                "main.(*genericBox[...]).park",
                "generic method <-ch",
                "chan receive",
            )
        });
    }
    if mode.cgo() {
        v.push(Parked {
            callers: &["main.parkInCgo"],
            ..p(
                "main._Cfunc_gospy_block_forever",
                "C function looping on sleep(3600)",
                "syscall",
            )
        });
    }
    // Started by the harness (GOSPY_FIXTURE_EXIT_ON_STDIN_EOF=1): reads the
    // blocking stdin pipe.
    v.push(p(
        "main.watchStdin",
        "os.Stdin.Read on the harness's pipe",
        "syscall",
    ));
    v
}
