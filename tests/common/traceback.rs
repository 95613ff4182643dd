//! Parser for the Go runtime's own goroutine traceback text, as printed by
//! `runtime.Stack(buf, true)`, by a crash or SIGQUIT (`GOTRACEBACK=all`,
//! `system`, `crash`), for Go 1.15 through 1.27.
//!
//! Format notes (all observed in `testdata/tracebacks/`):
//!
//! * header: `goroutine 7 [chan receive, 3 minutes, locked to thread]:`; with
//!   `GOTRACEBACK=system` in a crash (1.21+) `goroutine 7 gp=0xc000 m=nil
//!   [...]:` or `m=3 mp=0x...`; 1.27+ appends pprof labels
//!   (`[chan receive] {tier: gold, worker: 7}:`, default on only with
//!   `GODEBUG=tracebacklabels=1` for GOPATH-mode builds); 1.26 prints them
//!   inside the bracket, always quoted, with `GODEBUG=tracebacklabels=1`
//!   only: `[chan receive labels:{"tier": "gold"}]:`; 1.26+ may add
//!   ` (leaked)`, ` (scan)`, ` (durable)`, `, synctest bubble N` inside the
//!   brackets.
//! * frame: a function line `main.(*T).m(0xc0000, ...)` / `main.F[...](...)`
//!   (inlined frames always print `(...)`), then a tab-indented
//!   `\t/path/file.go:42 +0x1d` (no `+0x..` for inlined frames) with
//!   ` fp=0x.. sp=0x.. pc=0x..` appended under `GOTRACEBACK=system`.
//!   `runtime.gopanic` prints as `panic(...)`.
//! * `created by main.f` (1.21+: `created by main.f in goroutine 1`) + file line.
//! * elision: `...additional frames elided...` (≤1.20 and ancestors) or
//!   `...N frames elided...` (1.21+, between the first 50 and last 50 frames).
//!   Go 1.15 silently truncates at 100 physical frames (hidden ones count)
//!   without printing any marker unless all 100 were printed.
//! * `\tgoroutine running on other thread; stack unavailable` (crash dumps).
//! * `GODEBUG=tracebackancestors=N`: `[originating from goroutine N]:` then
//!   the ancestor's frames and its own `created by`.
//! * Anything outside a goroutine block (`panic: boom [recovered]`,
//!   `SIGQUIT: quit`, `PC=...`, register dumps) is ignored.

use std::collections::BTreeMap;
use std::fmt;

/// One frame as the runtime printed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeFrame {
    /// Function name without the argument list: `main.(*T).m`, `main.F[...]`,
    /// `panic` (the runtime's name for `runtime.gopanic`).
    pub function: String,
    pub file: String,
    pub line: u32,
    /// The file line had no `+0x..` pc offset: the runtime prints inlined
    /// frames that way (heuristic; always false for ancestor frames).
    pub inlined: bool,
}

impl fmt::Display for RuntimeFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.function, self.file, self.line)
    }
}

/// `created by F in goroutine N` plus its file line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBy {
    pub function: String,
    pub file: String,
    pub line: u32,
    /// `in goroutine N` (printed by Go 1.21+ only).
    pub parent_goid: Option<u64>,
}

impl fmt::Display for CreatedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "created by {}", self.function)?;
        if let Some(p) = self.parent_goid {
            write!(f, " in goroutine {p}")?;
        }
        write!(f, " {}:{}", self.file, self.line)
    }
}

/// An `[originating from goroutine N]:` section (`GODEBUG=tracebackancestors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub goid: u64,
    pub frames: Vec<RuntimeFrame>,
    pub created_by: Option<CreatedBy>,
    pub elided: bool,
}

/// One goroutine of a runtime traceback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeGoroutine {
    pub goid: u64,
    /// Text inside `[..]` before the first comma: `chan receive`, `running`,
    /// `syscall`, `semacquire`, `sync.Mutex.Lock`, `chan receive (leaked)`.
    pub state: String,
    /// The rest of the bracket, split on `, `: `3 minutes`, `locked to thread`.
    pub header_extra: Vec<String>,
    /// pprof labels from the header (Go 1.26+ with GODEBUG=tracebacklabels=1);
    /// None when the runtime printed none.
    pub labels: Option<BTreeMap<String, String>>,
    pub frames: Vec<RuntimeFrame>,
    pub created_by: Option<CreatedBy>,
    /// The runtime left frames out (`...additional frames elided...` or
    /// `...N frames elided...`).
    pub elided: bool,
    /// Index in `frames` where the elision marker stood (frames before it are
    /// the innermost ones, frames from it on are the outermost ones).
    pub elided_at: Option<usize>,
    /// `goroutine running on other thread; stack unavailable`.
    pub unavailable: bool,
    pub ancestors: Vec<Ancestor>,
    /// The header line as printed, for diagnostics.
    pub raw_header: String,
}

impl RuntimeGoroutine {
    /// Does any frame have exactly this function name?
    pub fn has_function(&self, function: &str) -> bool {
        self.frames.iter().any(|f| f.function == function)
    }

    /// Index of the first frame with exactly this function name.
    pub fn frame_index(&self, function: &str) -> Option<usize> {
        self.frames.iter().position(|f| f.function == function)
    }

    /// Is this the goroutine that was running `runtime.Stack` (the fixture's
    /// dumper)? Its stack moves, so comparisons skip it.
    pub fn is_dumper(&self) -> bool {
        self.frames
            .iter()
            .any(|f| f.function == "runtime.Stack" || f.function == "main.dumpStacks")
    }

    /// `running` or `runnable` (or `running (scan)` ...): the stack moves.
    pub fn is_moving(&self) -> bool {
        let s = self.state.split(' ').next().unwrap_or("");
        s == "running" || s == "runnable"
    }

    pub fn locked_to_thread(&self) -> bool {
        self.header_extra.iter().any(|e| e == "locked to thread")
    }
}

/// Parse a whole traceback text into goroutines, in the order printed.
pub fn parse_traceback(text: &str) -> Vec<RuntimeGoroutine> {
    let mut out = Vec::new();
    let mut cur: Option<Builder> = None;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(g) = parse_header(line) {
            if let Some(b) = cur.take() {
                out.push(b.finish());
            }
            cur = Some(Builder::new(g));
            continue;
        }
        let Some(b) = cur.as_mut() else { continue };
        if line.is_empty() {
            out.push(cur.take().unwrap().finish());
            continue;
        }
        b.line(line);
    }
    if let Some(b) = cur {
        out.push(b.finish());
    }
    out
}

/// Where the next file line goes.
enum Pending {
    None,
    Frame(String),
    CreatedBy(String, Option<u64>),
}

struct Builder {
    g: RuntimeGoroutine,
    pending: Pending,
    /// Currently inside an `[originating from goroutine N]` section.
    in_ancestor: bool,
}

impl Builder {
    fn new(g: RuntimeGoroutine) -> Builder {
        Builder {
            g,
            pending: Pending::None,
            in_ancestor: false,
        }
    }

    fn finish(self) -> RuntimeGoroutine {
        self.g
    }

    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix('\t') {
            let rest = rest.trim();
            if rest == "goroutine running on other thread; stack unavailable" {
                self.g.unavailable = true;
                return;
            }
            let pending = std::mem::replace(&mut self.pending, Pending::None);
            let Some((file, line_no, inlined)) = parse_file_line(rest) else {
                return;
            };
            match pending {
                Pending::None => {}
                Pending::Frame(function) => {
                    let frame = RuntimeFrame {
                        function,
                        file,
                        line: line_no,
                        inlined,
                    };
                    if self.in_ancestor {
                        let a = self.g.ancestors.last_mut().unwrap();
                        a.frames.push(RuntimeFrame {
                            inlined: false,
                            ..frame
                        });
                    } else {
                        self.g.frames.push(frame);
                    }
                }
                Pending::CreatedBy(function, parent_goid) => {
                    let cb = CreatedBy {
                        function,
                        file,
                        line: line_no,
                        parent_goid,
                    };
                    if self.in_ancestor {
                        self.g.ancestors.last_mut().unwrap().created_by = Some(cb);
                    } else {
                        self.g.created_by = Some(cb);
                    }
                }
            }
            return;
        }
        self.pending = Pending::None;
        if line == "...additional frames elided..." || is_n_frames_elided(line) {
            if self.in_ancestor {
                self.g.ancestors.last_mut().unwrap().elided = true;
            } else {
                self.g.elided = true;
                if self.g.elided_at.is_none() {
                    self.g.elided_at = Some(self.g.frames.len());
                }
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("[originating from goroutine ") {
            if let Some(goid) = rest.strip_suffix("]:").and_then(|s| s.parse().ok()) {
                self.g.ancestors.push(Ancestor {
                    goid,
                    frames: Vec::new(),
                    created_by: None,
                    elided: false,
                });
                self.in_ancestor = true;
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("created by ") {
            let (function, parent) = match rest.split_once(" in goroutine ") {
                Some((f, p)) => (f.to_string(), p.trim().parse().ok()),
                None => (rest.trim().to_string(), None),
            };
            self.pending = Pending::CreatedBy(function, parent);
            return;
        }
        if line.starts_with("panic: ") || line.starts_with("fatal error: ") {
            return;
        }
        self.pending = Pending::Frame(strip_args(line.trim()).to_string());
    }
}

fn is_n_frames_elided(line: &str) -> bool {
    line.strip_prefix("...")
        .and_then(|r| r.strip_suffix(" frames elided..."))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `goroutine 7 [chan receive, 2 minutes]:` (with optional ` gp=... m=...`
/// before the bracket and ` {labels}` after it).
fn parse_header(line: &str) -> Option<RuntimeGoroutine> {
    let rest = line.strip_prefix("goroutine ")?;
    let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let goid: u64 = rest[..digits].parse().ok()?;
    let rest = &rest[digits..];
    let open = rest.find(" [")?;
    let between = &rest[..open];
    if !(between.is_empty() || between.starts_with(" gp=")) {
        return None;
    }
    let after_open = &rest[open + 2..];
    let close = scan_to(after_open, ']')?;
    let mut inside = &after_open[..close];
    let tail = after_open[close + 1..].strip_suffix(':')?;
    let mut labels = match tail.trim() {
        "" => None,
        t if t.starts_with('{') && t.ends_with('}') => Some(parse_labels(&t[1..t.len() - 1])),
        _ => return None,
    };
    // Go 1.26 (GODEBUG=tracebacklabels=1) prints them inside the bracket.
    if let Some(i) = inside.find(" labels:{") {
        let body = &inside[i + " labels:{".len()..];
        labels = Some(parse_labels(body.strip_suffix('}').unwrap_or(body)));
        inside = &inside[..i];
    }
    let mut parts = inside.split(", ");
    let state = parts.next().unwrap_or("").to_string();
    let header_extra = parts.map(str::to_string).collect();
    Some(RuntimeGoroutine {
        goid,
        state,
        header_extra,
        labels,
        frames: Vec::new(),
        created_by: None,
        elided: false,
        elided_at: None,
        unavailable: false,
        ancestors: Vec::new(),
        raw_header: line.to_string(),
    })
}

/// Byte index of the first `stop` outside double quotes and braces.
fn scan_to(s: &str, stop: char) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut depth = 0u32;
    for (i, c) in s.char_indices() {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if c == stop && depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// `tier: gold, worker: 7` or with Go-quoted keys/values (`"a b": "x\"y"`).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key = read_label_token(&mut chars, ':');
        if chars.next() != Some(':') {
            break;
        }
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let value = read_label_token(&mut chars, ',');
        map.insert(key, value);
        if chars.next() != Some(',') {
            break;
        }
    }
    map
}

fn read_label_token(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, stop: char) -> String {
    let mut out = String::new();
    if chars.peek() == Some(&'"') {
        chars.next();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(o) => out.push(o),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return out;
    }
    while let Some(&c) = chars.peek() {
        if c == stop {
            break;
        }
        out.push(c);
        chars.next();
    }
    out.trim_end().to_string()
}

/// `/path/file.go:42 +0x1d fp=0x.. sp=0x.. pc=0x..` → (file, line, inlined).
fn parse_file_line(s: &str) -> Option<(String, u32, bool)> {
    let mut end = s.len();
    let mut has_pc_offset = false;
    if let Some(i) = s.find(" +0x") {
        end = i;
        has_pc_offset = true;
    }
    if let Some(i) = s[..end].find(" fp=") {
        end = i;
    }
    let loc = s[..end].trim_end();
    let (file, line) = loc.rsplit_once(':')?;
    let line: u32 = line.parse().ok()?;
    Some((file.to_string(), line, !has_pc_offset))
}

/// Strip the argument list: `main.(*T).m(0xc0000, ...)` → `main.(*T).m`,
/// `main.F[...](...)` → `main.F[...]`, `runtime.goexit({})` → `runtime.goexit`.
pub fn strip_args(line: &str) -> &str {
    if !line.ends_with(')') {
        return line;
    }
    let bytes = line.as_bytes();
    let mut depth = 0i32;
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    return &line[..i];
                }
            }
            _ => {}
        }
    }
    line
}
