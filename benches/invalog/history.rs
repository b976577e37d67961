//! Figure 5: the history of one id (`invalog::history::read` with a target)
//! against a raw filtered scan of the same stream, figure 2's.

use std::time::Instant;

use anyhow::{ensure, Result};
use invalog::LogSettings;

use crate::catch_up::raw_catch_up;
use crate::common::{connect, content, stream_last};
use crate::opts::Opts;
use crate::table::{fmt_num, Row};

pub async fn figure_5(o: &Opts, url: &str, log: &LogSettings, rows: &mut Vec<Row>) -> Result<()> {
    use invalog::history::{Query, Target};
    let js = connect(url).await?;
    let total = stream_last(&js, log).await?;
    let id = (o.history_ids / 2) as i64 + 42 % o.history_ids as i64;
    let expected = (0..total as usize)
        .filter(|k| (k % o.history_ids) as i64 == id)
        .count();
    println!("figure 5: every instruction that touched id {id} in a {total}-message stream ({expected} expected)");
    let subject = log.subject(&content().name);
    let (mut raw, mut ours) = (vec![], vec![]);
    for rep in 0..o.repeats {
        let (d, n) = raw_catch_up(url, log, subject.clone()).await?;
        ensure!(n == total, "raw read {n}");
        raw.push(d.as_secs_f64() * 1e3);
        let started = Instant::now();
        let query = Query {
            refreshers: vec![content().name],
            target: Some(Target::id(id)),
            ..Query::default()
        };
        let mut reader = invalog::history::read(&js, log, query).await?;
        let mut found = 0;
        while let Some(entry) = reader.next().await? {
            ensure!(entry.batch.is_ok(), "decodes");
            found += 1;
        }
        let d = started.elapsed();
        ensure!(
            found == expected,
            "history found {found}, expected {expected}"
        );
        ours.push(d.as_secs_f64() * 1e3);
        println!(
            "  run {}: raw scan {:.0} ms, invalog history {:.0} ms ({found} entries)",
            rep + 1,
            raw[rep],
            ours[rep]
        );
    }
    rows.push(Row {
        figure: format!(
            "5 history of one id, {} msgs (raw: filtered scan)",
            fmt_num(total as f64)
        ),
        unit: "ms",
        ours,
        base: raw,
        target: "-".into(),
        met: None,
    });
    Ok(())
}
