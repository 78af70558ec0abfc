//! Progress: a bar on a terminal (indicatif), plain lines on stderr otherwise — indicatif draws
//! nothing when stderr is not a terminal, so CI logs get the lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports the sweep's progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    /// A progress report over `total` configurations (none unless `shown`).
    pub fn new(total: usize, shown: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar
        });
        Progress { bar, total, done: 0, shown }
    }

    /// A configuration starts.
    pub fn start(&mut self, label: &str) {
        if !self.shown {
            return;
        }
        match &self.bar {
            Some(b) => b.set_message(label.to_string()),
            None => eprintln!("[{}/{}] {label} ...", self.done + 1, self.total),
        }
    }

    /// A step of it finished (shown on the bar only: lines would be too many).
    pub fn step(&self, label: &str, what: &str) {
        if let Some(b) = self.bar.as_ref().filter(|_| self.shown) {
            b.set_message(format!("{label}: {what}"));
        }
    }

    /// It finished.
    pub fn done(&mut self, label: &str, result: &str) {
        self.done += 1;
        if !self.shown {
            return;
        }
        match &self.bar {
            Some(b) => b.inc(1),
            None => eprintln!("[{}/{}] {label}: {result}", self.done, self.total),
        }
    }

    /// The sweep finished.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
