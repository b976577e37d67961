//! The results table: one `Row` per measured line, medians and spreads, the
//! number format, and the Markdown table printed at the end of a run.

pub struct Row {
    pub figure: String,
    pub unit: &'static str,
    pub ours: Vec<f64>,
    pub base: Vec<f64>,
    pub target: String,
    pub met: Option<bool>,
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl Row {
    fn ratio(&self) -> f64 {
        median(&self.ours) / median(&self.base)
    }
}

pub fn print_table(rows: &[Row]) {
    let header = [
        "figure",
        "unit",
        "invalog (median)",
        "spread (min–max)",
        "baseline (median)",
        "ratio",
        "target",
        "met?",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let (lo, hi) = min_max(&r.ours);
            [
                r.figure.clone(),
                r.unit.to_string(),
                fmt_num(median(&r.ours)),
                format!("{}–{}", fmt_num(lo), fmt_num(hi)),
                if r.base.is_empty() {
                    "-".into()
                } else {
                    fmt_num(median(&r.base))
                },
                if r.base.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2}", r.ratio())
                },
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(s, w)| format!("{s}{}", " ".repeat(w - s.chars().count())))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header.map(String::from));
    println!(
        "|{}|",
        width
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for c in &cells {
        line(c);
    }
}
