//! `invalog history`: what was invalidated, when and by whom, read from the
//! log without leaving state on the server (`invalog::history`). Filters by
//! sequence, time, refresher, entry, origin and actor; prints an aligned
//! table (widths taken from the first rows, so it can stream) or JSON lines
//! (`crate::json::history`); `--follow` tails the log. A progress bar
//! goes to stderr on long scans when stdout is a terminal.

use std::io::{IsTerminal as _, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use invalog::history::{self, Entry, HistoryError, Limit, Query, Target};
use invalog::RefresherName;

use super::ConfigArg;
use super::{client_settings, jetstream, Columns};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Scans at least this long get a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 5_000;
/// Rows read before the table's column widths are fixed.
const WIDTH_ROWS: usize = 500;

/// Arguments of `invalog history`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Times (--since, --until) are a duration back from now (`90s`, `2h`, `3days`, `2h ago`) or an RFC 3339 time (`2025-03-14T09:27:05Z`); they compare with the time the server stored each message.\n\nExit codes: 0 done (with --follow: stopped by Ctrl-C or SIGTERM); 1 the log cannot be read; 2 invalid configuration or arguments; 3 NATS unreachable or credentials refused.\n\nExamples:\n  invalog history -c config/publisher.toml --since 2h --refresher content --id 42\n  invalog history -c config/publisher.toml --from-seq 1200 --to-seq 1300 --json\n  invalog history -c config/publisher.toml --last 20 --follow"
)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// First sequence (inclusive).
    #[arg(long, value_name = "SEQ")]
    from_seq: Option<u64>,
    /// Last sequence (inclusive).
    #[arg(long, value_name = "SEQ")]
    to_seq: Option<u64>,
    /// Messages stored since this time: `2h` (ago) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Messages stored until this time: `30m` (ago) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Only this refresher (repeat, or separate with commas, for several).
    #[arg(long, short, value_name = "NAME", value_delimiter = ',')]
    refresher: Vec<String>,
    /// Only messages that touched this entry: an integer id, a UUID or a
    /// key (a refresh_all of the refresher counts: it touches every entry).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Only batches published by this origin.
    #[arg(long)]
    origin: Option<String>,
    /// Only batches with this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Print the first N matching messages, then stop.
    #[arg(long, short = 'n', value_name = "N", conflicts_with = "last")]
    limit: Option<usize>,
    /// Print the last N matching messages (before following, with --follow).
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// JSON lines: one object per message, the batch as stored.
    #[arg(long)]
    json: bool,
    /// Keep reading: print new messages as they arrive (Ctrl-C or SIGTERM
    /// stops, exit 0).
    #[arg(long, short)]
    follow: bool,
}

/// Runs `invalog history`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let settings = match client_settings(&args.config.publisher()) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    let query = match query(&args, SystemTime::now()) {
        Ok(query) => query,
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(EXIT_CONFIG);
        }
    };
    let (_client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let started = Instant::now();
    let target = query.target.clone();
    let mut reader = match history::read(&js, &settings.log, query).await {
        Ok(reader) => reader,
        Err(error) => return Ok(fail(&error)),
    };
    let terminal = std::io::stdout().is_terminal();
    let scanned = Arc::new(AtomicU64::new(0));
    let bar = (terminal && reader.to_scan() >= PROGRESS_MIN).then(|| {
        let bar = indicatif::ProgressBar::new(reader.to_scan());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} scanning the log: {human_pos}/{human_len} messages {wide_bar} {eta} left",
            )
            .expect("a valid template"),
        );
        bar
    });
    let (counter, b) = (scanned.clone(), bar.clone());
    reader.on_progress(move |p| {
        counter.store(p.scanned, Ordering::Relaxed);
        if let Some(bar) = &b {
            bar.set_position(p.scanned);
        }
    });
    let mut out = Output::new(args.json, target, terminal || args.follow, bar);
    let mut matched = 0u64;
    // Following ends with Ctrl-C or SIGTERM: a normal end, exit 0.
    let mut stop = std::pin::pin!(stop_following(args.follow));
    let outcome = loop {
        let next = tokio::select! {
            _ = &mut stop => break Ok(()),
            next = reader.next() => next,
        };
        match next {
            Ok(Some(entry)) => {
                matched += 1;
                if out.entry(&entry).is_err() {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
        // Past the log's end at start, and nothing held back: show all.
        if reader.is_live() && reader.buffered() == 0 && out.live().is_err() {
            break Ok(());
        }
    };
    let _ = out.finish();
    if let Err(error) = outcome {
        return Ok(fail(&error));
    }
    if !args.json && !args.follow {
        let what = if matched == 1 { "message" } else { "messages" };
        eprintln!(
            "{matched} {what} (log up to sequence {}, {} scanned, {:.2} s)",
            reader.end_sequence(),
            scanned.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(EXIT_OK)
}

/// Completes on SIGINT or SIGTERM when following; never otherwise (an
/// interrupted scan ends the default way, killed by the signal).
async fn stop_following(follow: bool) {
    if follow {
        super::agent_cmd::shutdown_signal().await;
    } else {
        std::future::pending::<()>().await;
    }
}

fn fail(error: &HistoryError) -> u8 {
    eprintln!("invalog: {error}");
    match error {
        HistoryError::Query(_) => EXIT_CONFIG,
        _ => EXIT_FAILURE,
    }
}

/// The query the arguments ask for, times relative to `now`.
fn query(args: &Args, now: SystemTime) -> Result<Query, String> {
    let refreshers = args
        .refresher
        .iter()
        .map(|r| RefresherName::new(r.trim()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Query {
        from_seq: args.from_seq,
        to_seq: args.to_seq,
        since: args.since.as_deref().map(|w| when(w, now)).transpose()?,
        until: args.until.as_deref().map(|w| when(w, now)).transpose()?,
        refreshers,
        target: args.id.as_deref().map(Target::parse),
        origin: args.origin.clone(),
        actor: args.actor.clone(),
        limit: match (args.limit, args.last) {
            (Some(n), _) => Limit::First(n),
            (None, Some(n)) => Limit::Last(n),
            (None, None) => Limit::All,
        },
        follow: args.follow,
    })
}

/// `2h`, `2h ago`, `90s` (back from `now`) or an RFC 3339 time.
pub(super) fn when(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let trimmed = text.trim();
    let duration = trimmed.strip_suffix("ago").unwrap_or(trimmed).trim();
    if let Ok(back) = humantime::parse_duration(duration) {
        return now
            .checked_sub(back)
            .ok_or_else(|| format!("`{text}` reaches too far back"));
    }
    time::OffsetDateTime::parse(trimmed, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| {
            format!("`{text}` is neither a duration like `2h` nor an RFC 3339 time like `2025-03-14T09:27:05Z`")
        })
}

/// A time as RFC 3339 in UTC with milliseconds: `2025-03-14T09:27:05.112Z`.
pub(super) fn millis(at: SystemTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let at = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i128::try_from(d.as_nanos()).ok())
        .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(FORMAT).unwrap_or_else(|_| "invalid-time".into())
}

/// What a message did, for the WHAT column: its instructions, then its
/// provenance; or why it does not decode.
pub(super) fn what(entry: &Entry) -> String {
    let batch = match &entry.batch {
        Ok(batch) => batch,
        Err(error) => return format!("undecodable: {error}"),
    };
    let mut s = if batch.instructions.is_empty() {
        "(no instructions)".to_owned()
    } else {
        let parts: Vec<String> = batch.instructions.iter().map(|i| i.to_string()).collect();
        parts.join("; ")
    };
    let p = &batch.provenance;
    if let Some(actor) = &p.actor {
        s.push_str(&format!("  actor={actor}"));
    }
    if let Some(reason) = &p.reason {
        s.push_str(&format!("  reason={reason:?}"));
    }
    if let Some(trace) = &p.trace_id {
        s.push_str(&format!("  trace_id={trace}"));
    }
    if batch.applied_at_origin {
        s.push_str("  (applied at origin)");
    }
    s
}

/// The table's columns for one message: [`HEADER`].
pub(super) fn row(entry: &Entry) -> Vec<String> {
    vec![
        entry.sequence.to_string(),
        millis(entry.stored_at),
        entry
            .batch
            .as_ref()
            .map_or_else(|_| "-".to_owned(), |b| b.origin.clone()),
        entry.refresher().to_owned(),
        what(entry),
    ]
}

/// The columns of a table of messages (`history`, `replay`, the demo),
/// as [`row`] fills them; the time is always 24 characters.
pub(super) fn columns() -> Columns {
    Columns::new(&HEADER, &[3, 24, 8, 9, 4])
}

/// Where entries go: JSON lines, or table rows whose widths come from the
/// first [`WIDTH_ROWS`] rows (or all of them, when fewer).
struct Output {
    json: bool,
    target: Option<Target>,
    eager: bool,
    bar: Option<indicatif::ProgressBar>,
    stdout: std::io::BufWriter<std::io::Stdout>,
    pending: Vec<Vec<String>>,
    columns: Columns,
    /// Text held while the progress bar shows, printed in chunks (each
    /// print hides and redraws the bar).
    held: String,
    shown: Instant,
}

/// The columns of [`row`].
pub(super) const HEADER: [&str; 5] = ["SEQ", "TIME", "ORIGIN", "REFRESHER", "WHAT"];

impl Output {
    fn new(
        json: bool,
        target: Option<Target>,
        eager: bool,
        bar: Option<indicatif::ProgressBar>,
    ) -> Self {
        Output {
            json,
            target,
            eager,
            bar,
            stdout: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            pending: Vec::new(),
            columns: columns(),
            held: String::new(),
            shown: Instant::now(),
        }
    }

    fn entry(&mut self, entry: &Entry) -> std::io::Result<()> {
        if self.json {
            let touch = self.target.as_ref().and_then(|t| t.touches(&entry.batch));
            let line = crate::json::history::encode_history_line(entry, touch);
            return self.write(&format!("{line}\n"));
        }
        self.pending.push(row(entry));
        if !self.columns.fixed() && self.pending.len() < WIDTH_ROWS {
            return Ok(());
        }
        self.flush_rows()
    }

    /// The read is past the log's end at start (or over): no more progress
    /// bar, and everything held back is printed now.
    fn live(&mut self) -> std::io::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let held = std::mem::take(&mut self.held);
        self.stdout.write_all(held.as_bytes())?;
        self.flush_rows()?;
        self.stdout.flush()
    }

    /// Prints the rows held back for the widths (and the header first).
    fn flush_rows(&mut self) -> std::io::Result<()> {
        if self.json || (!self.columns.fixed() && self.pending.is_empty()) {
            return Ok(());
        }
        let text = self.columns.render(&std::mem::take(&mut self.pending));
        self.write(&text)?;
        if self.eager && self.bar.is_none() {
            self.stdout.flush()?;
        }
        Ok(())
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        let Some(bar) = &self.bar else {
            return self.stdout.write_all(text.as_bytes());
        };
        self.held.push_str(text);
        if self.held.len() < 16 * 1024 && self.shown.elapsed() < Duration::from_millis(200) {
            return Ok(());
        }
        let (held, stdout) = (std::mem::take(&mut self.held), &mut self.stdout);
        self.shown = Instant::now();
        bar.suspend(|| {
            stdout
                .write_all(held.as_bytes())
                .and_then(|_| stdout.flush())
        })
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_back_or_rfc3339() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(when("2h", now), Ok(now - Duration::from_secs(7200)));
        assert_eq!(when("90s ago", now), Ok(now - Duration::from_secs(90)));
        assert_eq!(
            when("1970-01-01T00:00:01Z", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        );
        assert!(when("yesterday", now).unwrap_err().contains("RFC 3339"));
        assert_eq!(
            millis(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            "1970-01-01T00:00:01.500Z"
        );
    }
}
