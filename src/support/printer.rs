//! All user-facing output goes through the `Printer`: messages to stderr (stdout is for results such as
//! `inspect` tables and dry-run plans, so they can be piped), progress bars on a terminal, plain periodic
//! lines when stderr is a file or pipe (CI logs), and nothing but errors with `--quiet`.
//!
//! A closed stdout (`bundle images ... | head -1`) is a reader that has seen enough, not a failure: results
//! written after it closes are dropped and the command ends as it would have. `println!` would panic there.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Clone)]
pub struct Printer {
    verbosity: Verbosity,
    terminal: bool,
    multi: MultiProgress,
    /// Set once stdout's reader has gone away.
    stdout_closed: Arc<AtomicBool>,
    /// `--json`: stdout holds one JSON document (`document`), so result lines go to stderr.
    json_document: bool,
}

/// A size as people read it (`1.2 GiB`), in every message.
pub fn human(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// How often a non-terminal progress line is printed.
const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

impl Printer {
    pub fn new(verbosity: Verbosity) -> Printer {
        let terminal = std::io::stderr().is_terminal();
        let target = if terminal && verbosity != Verbosity::Quiet {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Printer {
            verbosity,
            terminal,
            multi: MultiProgress::with_draw_target(target),
            stdout_closed: Arc::new(AtomicBool::new(false)),
            json_document: false,
        }
    }

    /// A printer whose stdout is kept for one JSON document: result lines are written to stderr instead.
    pub fn with_json_document(mut self) -> Printer {
        self.json_document = true;
        self
    }

    /// The run's one JSON document, on stdout (`--json`).
    pub fn document(&self, value: &impl serde::Serialize) {
        let text = serde_json::to_string_pretty(value).expect("our result types serialise");
        self.write_stdout(format!("{text}\n").as_bytes());
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    fn emit(&self, line: &str) {
        if self.terminal {
            // Keeps bars intact: the line is printed above them.
            let _ = self.multi.println(line);
        } else {
            stderr_line(line);
        }
    }

    /// A line of the command's result, on stdout, whatever the verbosity (`--quiet` silences messages, not
    /// results).
    pub fn result(&self, line: impl AsRef<str>) {
        if self.json_document {
            self.emit(line.as_ref());
            return;
        }
        if self.stdout_closed.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        let written = writeln!(out, "{}", line.as_ref()).and_then(|()| out.flush());
        if written.is_err() {
            // A closed pipe, or a full disk behind a redirect: either way nobody reads the rest.
            self.stdout_closed.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes of a result that carries its own line ends (a completion script, a man page).
    pub fn result_bytes(&self, bytes: &[u8]) {
        self.write_stdout(bytes);
    }

    fn write_stdout(&self, bytes: &[u8]) {
        if self.stdout_closed.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
            self.stdout_closed.store(true, Ordering::Relaxed);
        }
    }

    /// A value as pretty JSON on stdout.
    pub fn result_json(&self, value: &impl serde::Serialize) {
        self.result(serde_json::to_string_pretty(value).expect("our result types serialise"));
    }

    /// An error that ends the command: the message, each cause, and what to do about it.
    /// Printed with `--quiet` too, and straight to stderr: the progress bars are gone by then.
    pub fn error(&self, message: &str, causes: &[String], hint: Option<&str>) {
        let mut text = format!("error: {message}");
        for cause in causes {
            text.push_str(&format!("\n  Caused by: {cause}"));
        }
        if let Some(hint) = hint {
            text.push_str(&format!("\nhint: {hint}"));
        }
        stderr_line(&text);
    }

    /// A normal progress message (hidden with --quiet).
    pub fn info(&self, line: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            self.emit(line.as_ref());
        }
    }

    /// Detail for --verbose.
    pub fn detail(&self, line: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Verbose {
            self.emit(line.as_ref());
        }
    }

    pub fn warn(&self, line: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            self.emit(&format!("warning: {}", line.as_ref()));
        }
    }

    /// Progress of a transfer of `total` bytes in `items` blobs.
    pub fn transfer(&self, verb: &'static str, total: u64, items: u64) -> Transfer {
        let bar = if self.terminal && self.verbosity != Verbosity::Quiet {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(verb);
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        Transfer {
            inner: Arc::new(TransferInner {
                verb,
                total,
                items,
                bytes: AtomicI64::new(0),
                done_items: AtomicU64::new(0),
                in_flight: AtomicI64::new(0),
                started: Instant::now(),
                last_plain: Mutex::new(Instant::now()),
                bar,
                plain: !self.terminal && self.verbosity != Verbosity::Quiet,
            }),
        }
    }
}

/// A shared, cheap-to-clone progress handle for one transfer.
#[derive(Clone)]
pub struct Transfer {
    inner: Arc<TransferInner>,
}

struct TransferInner {
    verb: &'static str,
    total: u64,
    items: u64,
    bytes: AtomicI64,
    done_items: AtomicU64,
    in_flight: AtomicI64,
    started: Instant,
    last_plain: Mutex<Instant>,
    bar: Option<ProgressBar>,
    plain: bool,
}

impl Transfer {
    /// Count `delta` bytes (negative when a retry discards what was counted).
    /// Back to zero bytes: the work is being done again.
    pub fn reset(&self) {
        self.add(-self.inner.bytes.load(Ordering::Relaxed));
    }

    pub fn add(&self, delta: i64) {
        let i = &self.inner;
        let now = i.bytes.fetch_add(delta, Ordering::Relaxed) + delta;
        if let Some(bar) = &i.bar {
            bar.set_position(now.max(0) as u64);
        }
        if i.plain {
            let mut last = i.last_plain.lock().expect("progress lock");
            if last.elapsed() >= PLAIN_INTERVAL {
                *last = Instant::now();
                drop(last);
                stderr_line(&self.line());
            }
        }
    }

    /// A blob counted in the total that turned out not to need transferring.
    pub fn skipped(&self, bytes: u64) {
        self.item_started();
        self.add(bytes as i64);
        self.item_done();
    }

    pub fn item_started(&self) {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        self.refresh_message();
    }

    pub fn item_done(&self) {
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.inner.done_items.fetch_add(1, Ordering::Relaxed);
        self.refresh_message();
    }

    fn refresh_message(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.set_message(format!(
                "{}/{} blobs, {} in flight",
                self.inner.done_items.load(Ordering::Relaxed),
                self.inner.items,
                self.inner.in_flight.load(Ordering::Relaxed).max(0)
            ));
        }
    }

    fn line(&self) -> String {
        let i = &self.inner;
        let bytes = i.bytes.load(Ordering::Relaxed).max(0) as u64;
        let secs = i.started.elapsed().as_secs_f64().max(0.001);
        let pct = if i.total == 0 { 100.0 } else { bytes as f64 * 100.0 / i.total as f64 };
        format!(
            "{} {} of {} ({pct:.0}%), {}/s, {}/{} blobs",
            i.verb,
            HumanBytes(bytes),
            HumanBytes(i.total),
            HumanBytes((bytes as f64 / secs) as u64),
            i.done_items.load(Ordering::Relaxed),
            i.items
        )
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }
}

/// One line on stderr; a closed stderr is ignored (there is nowhere left to say anything).
fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
