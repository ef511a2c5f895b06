//! `eco monit`: every instance with its status, CPU, memory (and a small
//! history), restarts and uptime, grouped by project; the selected app's
//! live output below. Refreshes about once a second; the terminal is
//! restored on every way out (q, Ctrl-C, SIGTERM/SIGHUP, a panic).

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::state::Status;
use crate::view;
use anyhow::Result;
use nix::sys::signal::{SigSet, Signal};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::render;
use crate::ipc::client::Client;
use crate::ipc::proto::{Request, Response};
use crate::paths::Paths;

/// How often the table is refreshed.
const REFRESH: Duration = Duration::from_secs(1);
/// Memory samples kept per instance for the sparkline.
const HISTORY: usize = 12;
/// Log lines kept for the selected app.
const LOG_LINES: usize = 200;

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The live output of one app, filled by a follower thread.
struct Follower {
    app: String,
    lines: Arc<Mutex<VecDeque<String>>>,
    stream: Option<UnixStream>,
}

impl Follower {
    fn start(paths: &Paths, target: &str) -> Follower {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let mut stream = None;
        if let Ok(mut client) = Client::connect(paths, false)
            && let Ok(Response::LogFiles { files }) = client.call(Request::LogFiles {
                target: Some(target.to_owned()),
            })
        {
            let mut buf = lines.lock().unwrap_or_else(PoisonError::into_inner);
            for file in files {
                buf.extend(crate::logs::tail(&file.path, 20));
            }
        }
        if let Ok(mut client) = Client::connect(paths, false) {
            stream = client.stream_handle();
            let sink = Arc::clone(&lines);
            let request = Request::Follow {
                target: Some(target.to_owned()),
                out: true,
                err: true,
            };
            std::thread::spawn(move || {
                if client.send(request).is_err() {
                    return;
                }
                while let Ok(Some(response)) = client.receive() {
                    if let Response::Line { text, .. } = response {
                        let mut buf = sink.lock().unwrap_or_else(PoisonError::into_inner);
                        buf.push_back(text);
                        while buf.len() > LOG_LINES {
                            buf.pop_front();
                        }
                    }
                }
            });
        }
        Follower {
            app: target.to_owned(),
            lines,
            stream,
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

struct Monit {
    paths: Paths,
    rows: Vec<view::Row>,
    memory: HashMap<(String, String, u32), VecDeque<u64>>,
    table: TableState,
    filter: String,
    filtering: bool,
    follower: Option<Follower>,
    message: String,
}

impl Monit {
    fn refresh(&mut self) -> Result<()> {
        let mut client = Client::connect(&self.paths, true)?;
        if let Response::List { rows, .. } = client.call(Request::List)? {
            for row in &rows {
                let key = (row.project.clone(), row.app.clone(), row.instance);
                let history = self.memory.entry(key).or_default();
                history.push_back(row.memory_bytes.unwrap_or(0));
                while history.len() > HISTORY {
                    history.pop_front();
                }
            }
            self.rows = rows;
        }
        if self.table.selected().is_none() && !self.visible().is_empty() {
            self.table.select(Some(0));
        }
        self.follow_selected();
        Ok(())
    }

    fn visible(&self) -> Vec<&view::Row> {
        let filter = self.filter.to_lowercase();
        self.rows
            .iter()
            .filter(|r| {
                filter.is_empty()
                    || r.app.to_lowercase().contains(&filter)
                    || r.project.to_lowercase().contains(&filter)
            })
            .collect()
    }

    /// `project/app` of the selected row.
    fn selected_app(&self) -> Option<String> {
        let rows = self.visible();
        let row = rows.get(self.table.selected()?)?;
        Some(format!("{}/{}", row.project, row.app))
    }

    fn follow_selected(&mut self) {
        let selected = self.selected_app();
        let current = self.follower.as_ref().map(|f| f.app.clone());
        if selected != current {
            self.follower = selected.map(|app| Follower::start(&self.paths, &app));
        }
    }

    fn act(&mut self, verb: &str) {
        let Some(app) = self.selected_app() else {
            return;
        };
        let request = match verb {
            "restart" => Request::Restart {
                target: app.clone(),
            },
            "stop" => Request::Stop {
                target: app.clone(),
            },
            _ => Request::Start {
                target: app.clone(),
            },
        };
        self.message = match Client::connect(&self.paths, true).and_then(|mut c| c.call(request)) {
            Ok(Response::Done { command, targets }) => render::done(command, &targets),
            Ok(Response::Error(reply)) => format!("error: {}", reply.message),
            Ok(_) => String::new(),
            Err(err) => format!("error: {err}"),
        };
    }

    fn draw(&mut self, frame: &mut Frame) {
        let [top, logs, help] = Layout::vertical([
            Constraint::Percentage(55),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.draw_table(frame, top);
        self.draw_logs(frame, logs);
        frame.render_widget(Paragraph::new(self.help_text()), help);
    }

    /// The instances, one row each, the project named once per group.
    fn draw_table(&mut self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let header = Row::new([
            "project", "app", "id", "status", "cpu", "memory", "", "restarts", "uptime",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD));
        let mut last_project = String::new();
        let rows: Vec<Row> = self
            .visible()
            .iter()
            .map(|r| {
                let project = r.project.clone();
                let shown_project = if project == last_project {
                    String::new()
                } else {
                    project.clone()
                };
                last_project = project.clone();
                let color = match r.status {
                    Status::Online => Color::Green,
                    Status::Errored => Color::Red,
                    Status::Stopped => Color::DarkGray,
                    _ => Color::Yellow,
                };
                let key = (project, r.app.clone(), r.instance);
                Row::new(vec![
                    ratatui::widgets::Cell::from(shown_project),
                    r.app.clone().into(),
                    r.instance.to_string().into(),
                    ratatui::text::Span::styled(status_cell(r), Style::default().fg(color)).into(),
                    r.cpu_percent
                        .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%"))
                        .into(),
                    r.memory_bytes
                        .map_or_else(|| "-".to_owned(), render::bytes)
                        .into(),
                    sparkline(self.memory.get(&key)).into(),
                    r.restarts.to_string().into(),
                    r.uptime_ms
                        .map_or_else(|| "-".to_owned(), render::uptime)
                        .into(),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Min(8),
                Constraint::Length(3),
                Constraint::Min(8),
                Constraint::Length(7),
                Constraint::Length(10),
                Constraint::Length(HISTORY as u16),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(header)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(Block::default().borders(Borders::ALL).title(" eco monit "));
        frame.render_stateful_widget(table, area, &mut self.table);
    }

    /// The followed app's last lines, as many as fit.
    fn draw_logs(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let title = self
            .follower
            .as_ref()
            .map_or(" logs ".to_owned(), |f| format!(" logs: {} ", f.app));
        let height = usize::from(area.height.saturating_sub(2));
        let lines: Vec<Line> = self
            .follower
            .as_ref()
            .map(|f| {
                let buf = f.lines.lock().unwrap_or_else(PoisonError::into_inner);
                let skip = buf.len().saturating_sub(height);
                buf.iter()
                    .skip(skip)
                    .map(|l| Line::from(l.clone()))
                    .collect()
            })
            .unwrap_or_default();
        frame.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            area,
        );
    }

    /// The bottom line: the filter being typed, or the keys (after the
    /// last action's message).
    fn help_text(&self) -> String {
        if self.filtering {
            format!("filter: {}_   (Enter: keep, Esc: clear)", self.filter)
        } else if !self.message.is_empty() {
            format!(
                "{}   | ↑↓ move  r restart  s stop  S start  / filter  q quit",
                self.message
            )
        } else {
            "↑↓ move  r restart  s stop  S start  / filter  q quit".to_owned()
        }
    }

    fn move_by(&mut self, delta: isize) {
        let count = self.visible().len();
        if count == 0 {
            return;
        }
        let current = self.table.selected().unwrap_or(0) as isize;
        let next = (current + delta).clamp(0, count as isize - 1);
        self.table.select(Some(next as usize));
        self.follow_selected();
    }
}

/// The status, with the app's own words (`STATUS=`) when it sent some.
fn status_cell(row: &view::Row) -> String {
    let status = if row.reloading {
        "reloading"
    } else {
        row.status.as_str()
    };
    match &row.status_text {
        Some(text) => {
            let short: String = text.chars().take(24).collect();
            format!("{status} · {short}")
        }
        None => status.to_owned(),
    }
}

fn sparkline(history: Option<&VecDeque<u64>>) -> String {
    let Some(history) = history else {
        return String::new();
    };
    let max = history.iter().copied().max().unwrap_or(0).max(1);
    history
        .iter()
        .map(|v| SPARKS[usize::try_from(v * 7 / max).unwrap_or(7).min(7)])
        .collect()
}

/// Runs the dashboard until the user leaves.
pub fn run() -> Result<i32> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout())
        || !std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        return Err(crate::error::UsageError(
            "eco monit needs a terminal; use `eco ls` or `eco ls --json` in scripts".into(),
        )
        .into());
    }
    let quit = quit_on_signals()?;
    exit_on_hangup();
    let paths = Paths::from_env();
    // Make sure the daemon answers before taking over the terminal.
    Client::connect(&paths, true)?;
    let mut terminal = ratatui::try_init()?;
    let mut monit = Monit {
        paths,
        rows: Vec::new(),
        memory: HashMap::new(),
        table: TableState::default(),
        filter: String::new(),
        filtering: false,
        follower: None,
        message: String::new(),
    };
    let result = monit.run(&mut terminal, &quit);
    drop(monit);
    ratatui::restore();
    result.map(|()| 0)
}

/// SIGTERM and SIGHUP become a clean exit (terminal restored), taken on
/// a thread while the main loop polls for keys: the returned flag.
fn quit_on_signals() -> Result<Arc<AtomicBool>> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;
    let quit = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&quit);
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            flag.store(true, Ordering::SeqCst);
            // The main loop checks the flag at least every 250 ms; if it is
            // stuck (e.g. in a terminal read), restore and leave from here.
            std::thread::sleep(Duration::from_millis(500));
            ratatui::restore();
            std::process::exit(0);
        }
    });
    Ok(quit)
}

/// If the terminal goes away (ssh dropped, pty closed), leave: without a
/// terminal there is nothing to show and nothing to restore.
fn exit_on_hangup() {
    std::thread::spawn(|| {
        let stdin = std::io::stdin();
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&stdin),
            nix::poll::PollFlags::empty(),
        )];
        loop {
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(_) => {
                    let hung_up = fds[0].revents().is_some_and(|r| {
                        r.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)
                    });
                    if hung_up {
                        std::process::exit(0);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    });
}

/// What a key press asks of the main loop.
enum KeyOutcome {
    Stay,
    /// An action was sent: refresh now to show its effect.
    Refresh,
    Quit,
}

impl Monit {
    /// The main loop: refresh, draw, and answer keys until the user
    /// leaves or `quit` is set.
    fn run(&mut self, terminal: &mut ratatui::DefaultTerminal, quit: &AtomicBool) -> Result<()> {
        let mut next_refresh = Instant::now();
        loop {
            if quit.load(Ordering::SeqCst) {
                return Ok(());
            }
            if Instant::now() >= next_refresh {
                self.refresh()?;
                next_refresh = Instant::now() + REFRESH;
            }
            terminal.draw(|frame| self.draw(frame))?;
            let wait = next_refresh
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            if !event::poll(wait)? {
                continue;
            }
            let Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match self.on_key(key) {
                KeyOutcome::Stay => {}
                KeyOutcome::Refresh => next_refresh = Instant::now(),
                KeyOutcome::Quit => return Ok(()),
            }
        }
    }

    fn on_key(&mut self, key: event::KeyEvent) -> KeyOutcome {
        if self.filtering {
            self.on_filter_key(key.code);
            return KeyOutcome::Stay;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return KeyOutcome::Quit,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return KeyOutcome::Quit;
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Char('r') => {
                self.act("restart");
                return KeyOutcome::Refresh;
            }
            KeyCode::Char('s') => {
                self.act("stop");
                return KeyOutcome::Refresh;
            }
            KeyCode::Char('S') => {
                self.act("start");
                return KeyOutcome::Refresh;
            }
            KeyCode::Char('/') => {
                self.filtering = true;
                self.filter.clear();
            }
            _ => {}
        }
        KeyOutcome::Stay
    }

    /// A key while typing a filter: edits it, and follows the first match.
    fn on_filter_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Enter => self.filtering = false,
            KeyCode::Esc => {
                self.filtering = false;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.table.select(Some(0));
        self.follow_selected();
    }
}
