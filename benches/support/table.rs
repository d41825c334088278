//! The one table the bench prints, and how its figures are written.

use super::machine::load_average;

#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    pub fn row(
        &mut self,
        measure: &str,
        result: String,
        limit: String,
        ratio: String,
        target: &str,
        met: Option<bool>,
    ) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        self.rows.push([
            measure.to_string(),
            result,
            limit,
            ratio,
            target.to_string(),
            met.to_string(),
        ]);
    }

    /// A figure with an absolute target of issue 7 (no limit to compare with).
    pub fn target(&mut self, measure: &str, result: String, target: &str, met: bool) {
        self.row(
            measure,
            result,
            String::new(),
            String::new(),
            target,
            Some(met),
        );
    }

    pub fn info(&mut self, measure: &str, result: String) {
        self.row(measure, result, String::new(), String::new(), "", None);
    }

    pub fn error(&mut self, measure: &str, e: &anyhow::Error) {
        let text = format!("{e:#}").replace('\n', " ");
        let text: String = text.chars().take(160).collect();
        self.info(measure, format!("ERROR: {text}"));
    }

    pub fn print(&self) {
        let header = [
            "measure",
            "result",
            "limit / baseline",
            "ratio",
            "target",
            "met",
        ];
        let mut widths = header.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut out = String::from("|");
            for (cell, w) in cells.iter().zip(widths) {
                out.push_str(&format!(" {cell:<w$} |"));
            }
            out
        };
        println!("{}", line(header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!(
            "{}",
            line([&rule[0], &rule[1], &rule[2], &rule[3], &rule[4], &rule[5]])
        );
        for row in &self.rows {
            println!(
                "{}",
                line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])
            );
        }
    }
}

pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn rate(r: f64) -> String {
    format!("{} ev/s", thousands(r))
}

pub fn ratio(value: f64, limit: Option<f64>) -> String {
    match limit {
        Some(l) if l > 0.0 => format!("{:.2}", value / l),
        _ => String::new(),
    }
}

pub fn events_label(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

pub fn progress(what: &str) {
    eprintln!("bench: [{}] {what}", load_average());
}

/// The limit row's text: the rate and the raw publisher's own CPU per 1M messages.
pub fn limit_result(rate_per_sec: f64, cpu_per_million: f64) -> String {
    format!(
        "{}; the publisher's own CPU {cpu_per_million:.2} CPU-s per 1M",
        rate(rate_per_sec)
    )
}

/// The mean of measurements alternated in rounds (NaN for none).
pub fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    values.sum::<f64>() / n as f64
}

/// Rates as a list, in the order they were measured.
pub fn in_run_order(rates: impl Iterator<Item = f64>) -> String {
    rates.map(rate).collect::<Vec<_>>().join(", ")
}

/// The baseline and ratio columns of a row measured against the first of its series (1 replica,
/// 1 connection): empty on the first row itself.
pub fn against_first(
    first: bool,
    baseline: &str,
    rate: f64,
    of_first: Option<f64>,
) -> (String, String) {
    if first {
        (String::new(), String::new())
    } else {
        (baseline.to_string(), ratio(rate, of_first))
    }
}
