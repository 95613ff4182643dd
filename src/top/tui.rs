//! The full-screen view of `gospy top` (ratatui on crossterm), and its keys.
//!
//! The terminal is put back (main screen, cursor shown, cooked mode) on
//! every way out: [`Tui::stop`], dropping the [`Tui`] (an error or an early
//! return), and a panic, through a hook installed by [`Tui::start`].

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Alignment, Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Terminal;

use super::{header_lines, table_text, Action, Grouping, Refresh, TargetInfo, View, ViewState};

/// Whether the terminal is in gospy's full-screen mode and must be restored.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Set by SIGTERM or SIGHUP while the view is up.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_signal: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do here.
    TERMINATED.store(true, Ordering::SeqCst);
}

/// Whether SIGTERM or SIGHUP asked gospy to leave the view.
pub fn terminated() -> bool {
    TERMINATED.load(Ordering::SeqCst)
}

/// Puts the terminal back as it was; does nothing if it already is, so every
/// exit path may call it.
pub fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
}

/// What [`Tui::poll`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A key was pressed.
    Key(KeyEvent),
    /// The terminal changed size: draw again at once.
    Resized,
}

/// The full-screen terminal; restores it when dropped.
pub struct Tui {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Tui {
    /// Switches the terminal to the alternate screen in raw mode, hides the
    /// cursor, and makes sure a panic restores it before its message is
    /// printed (otherwise the message would land on the alternate screen
    /// and vanish).
    pub fn start() -> io::Result<Tui> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        // SIGTERM and SIGHUP would otherwise kill gospy with the terminal
        // still raw and on the alternate screen; instead the loop sees the
        // flag and leaves the normal way. (Ctrl-C is a key in raw mode.)
        let action = SigAction::new(
            SigHandler::Handler(on_terminate),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
        }
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = io::stdout();
        if let Err(e) = execute!(out, terminal::EnterAlternateScreen, cursor::Hide) {
            restore_terminal();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(Tui { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }

    /// Restores the terminal.
    pub fn stop(self) {
        drop(self);
    }

    /// Waits up to `timeout` for a key press or a resize.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<Option<Input>> {
        if !event::poll(timeout)? {
            return Ok(None);
        }
        match event::read()? {
            Event::Key(key) if key.kind != KeyEventKind::Release => Ok(Some(Input::Key(key))),
            Event::Resize(..) => {
                self.terminal.autoresize()?;
                Ok(Some(Input::Resized))
            }
            _ => Ok(None),
        }
    }

    /// Draws header, table and key help.
    pub fn draw(
        &mut self,
        info: &TargetInfo,
        refresh: &Refresh,
        state: &ViewState,
    ) -> io::Result<()> {
        let header = header_lines(info, refresh, state);
        let table = table_text(refresh, state);
        let view = state.view();
        self.terminal.draw(|frame| {
            let [top, body, help] = Layout::vertical([
                Constraint::Length(header.len() as u16),
                Constraint::Min(3),
                Constraint::Length(1),
            ])
            .areas(frame.area());
            frame.render_widget(
                Paragraph::new(header.into_iter().map(Line::from).collect::<Vec<_>>()),
                top,
            );

            let sort_name = view.sort_columns().get(state.sort).copied().unwrap_or("");
            let title = format!(
                " {} - sorted by {}{}{} ",
                table.title,
                sort_name,
                if state.reverse { " (reversed)" } else { "" },
                if state.filter.is_empty() {
                    String::new()
                } else {
                    format!(", filter \"{}\"", state.filter)
                }
            );
            let widths: Vec<Constraint> = match view {
                View::Functions => vec![
                    Constraint::Length(6),
                    Constraint::Length(7),
                    Constraint::Length(8),
                    Constraint::Length(9),
                    Constraint::Fill(1),
                ],
                View::Goroutines(_) => vec![
                    Constraint::Length(6),
                    Constraint::Percentage(45),
                    Constraint::Fill(1),
                ],
            };
            // Numbers right-aligned, names and states as they read.
            let text_columns: Vec<bool> =
                table.columns.iter().map(|c| super::is_text_column(c)).collect();
            let rows = table.rows.into_iter().map(|cells| {
                Row::new(cells.into_iter().enumerate().map(|(i, cell)| {
                    let line = Line::from(cell);
                    if text_columns.get(i) == Some(&true) {
                        Cell::from(line)
                    } else {
                        Cell::from(line.alignment(Alignment::Right))
                    }
                }))
            });
            let header = Row::new(table.columns.iter().enumerate().map(|(i, c)| {
                let line = Line::from(*c);
                if text_columns.get(i) == Some(&true) {
                    Cell::from(line)
                } else {
                    Cell::from(line.alignment(Alignment::Right))
                }
            }));
            frame.render_widget(
                Table::new(rows, widths)
                    .header(header.style(Style::default().add_modifier(Modifier::REVERSED)))
                    .block(Block::default().title(title)),
                body,
            );

            let help_text = match &state.editing {
                Some(text) => format!("filter: {text}_   (Enter applies, Esc clears)"),
                None => format!(
                    "q quit  g view/grouping  s/S sort/reverse  1-{} sort column  c {}  / filter  space {}",
                    view.sort_columns().len(),
                    if state.cumulative { "last interval" } else { "since start" },
                    if state.paused { "resume" } else { "pause" }
                ),
            };
            frame.render_widget(
                Paragraph::new(help_text).style(Style::default().add_modifier(Modifier::REVERSED)),
                help,
            );
        })?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Applies `key` to `state`. `grouping` is where `g` starts in the goroutine
/// views.
pub fn handle_key(state: &mut ViewState, key: KeyEvent, grouping: Grouping) -> Action {
    // Raw mode turns Ctrl-C into a key instead of SIGINT.
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if let Some(text) = state.editing.as_mut() {
        match key.code {
            KeyCode::Enter => {
                state.filter = std::mem::take(text);
                state.editing = None;
            }
            KeyCode::Esc => {
                state.filter.clear();
                state.editing = None;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => return Action::None,
        }
        return Action::Redraw;
    }
    let columns = state.view().sort_columns().len();
    match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') => return Action::Quit,
        KeyCode::Esc if !state.filter.is_empty() => state.filter.clear(),
        KeyCode::Char('g') => {
            state.view = next_view(state.view(), grouping);
            state.sort = 0;
            state.reverse = false;
        }
        KeyCode::Char('s') => state.sort = (state.sort + 1) % columns,
        KeyCode::Char('S') => state.reverse = !state.reverse,
        KeyCode::Char(c @ '1'..='9') => {
            let i = c as usize - '1' as usize;
            if i >= columns {
                return Action::None;
            }
            if state.sort == i {
                state.reverse = !state.reverse;
            } else {
                state.sort = i;
                state.reverse = false;
            }
        }
        KeyCode::Char('c') => state.cumulative = !state.cumulative,
        KeyCode::Char('/') => state.editing = Some(state.filter.clone()),
        KeyCode::Char(' ') | KeyCode::Char('p') => state.paused = !state.paused,
        _ => return Action::None,
    }
    Action::Redraw
}

/// The view after `view` for the `g` key: the functions, then each
/// grouping once starting at `grouping`, then the functions again.
fn next_view(view: View, grouping: Grouping) -> View {
    const ALL: [Grouping; 3] = [Grouping::Current, Grouping::Start, Grouping::Creator];
    let first = ALL.iter().position(|&g| g == grouping).unwrap_or(0);
    match view {
        View::Functions => View::Goroutines(grouping),
        View::Goroutines(g) => {
            let i = ALL.iter().position(|&x| x == g).unwrap_or(0);
            let next = ALL[(i + 1) % ALL.len()];
            if (i + 1) % ALL.len() == first {
                View::Functions
            } else {
                View::Goroutines(next)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn g_cycles_views_from_the_chosen_grouping() {
        for start in [Grouping::Current, Grouping::Start, Grouping::Creator] {
            let mut state = ViewState::default();
            let mut seen = vec![state.view()];
            for _ in 0..4 {
                handle_key(&mut state, key('g'), start);
                seen.push(state.view());
            }
            assert_eq!(seen[1], View::Goroutines(start));
            assert_eq!(seen[4], View::Functions, "from {start:?}: {seen:?}");
            let mut groupings: Vec<View> = seen[1..4].to_vec();
            groupings.sort_by_key(|v| format!("{v:?}"));
            groupings.dedup();
            assert_eq!(groupings.len(), 3, "from {start:?}: {seen:?}");
        }
    }

    #[test]
    fn filter_editing() {
        let mut state = ViewState::default();
        handle_key(&mut state, key('/'), Grouping::Current);
        for c in "work".chars() {
            handle_key(&mut state, key(c), Grouping::Current);
        }
        assert_eq!(state.filter, "");
        handle_key(
            &mut state,
            KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE),
            Grouping::Current,
        );
        assert_eq!(state.filter, "work");
        assert_eq!(state.editing, None);
        // `q` while typing is text, not quit.
        handle_key(&mut state, key('/'), Grouping::Current);
        assert_eq!(
            handle_key(&mut state, key('q'), Grouping::Current),
            Action::Redraw
        );
        handle_key(
            &mut state,
            KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE),
            Grouping::Current,
        );
        assert_eq!(state.filter, "");
        assert_eq!(
            handle_key(&mut state, key('q'), Grouping::Current),
            Action::Quit
        );
    }
}
