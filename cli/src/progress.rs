//! Progress for people: a bar while a bundle uploads, a spinner while a deployment is followed. Both draw on
//! stderr only when it is a terminal (indicatif hides them otherwise) and never with `--json`, so scripts and
//! logs see the plain lines alone.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// A bar over the upload's bytes (its length is set when the body is known).
pub fn upload(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "  uploading [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner with `message` and the time waited so far.
pub fn waiting(json: bool, message: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner().with_message(message.to_owned());
    if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} ({elapsed})") {
        spinner.set_style(style);
    }
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}
