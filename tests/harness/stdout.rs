//! The stdout sink's consumer: the JSON lines relays print, read from their stdout files (the
//! tests) or from a pipe as they come (the bench).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ChildStdout;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::consumer::{Consumer, Inbox, Received};
use super::relay::{Relay, fast_settings};

/// The relay's settings for the stdout sink.
pub fn stdout_sink_settings() -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings
}

/// A line of the stdout sink as a [`Received`]: a raw line's fields, or (another format) the
/// whole line as the payload.
pub fn parse_line(line: &str) -> Received {
    let json: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
    let text = |name: &str| json[name].as_str().map(str::to_string);
    let payload = match (text("payload"), text("payload_base64")) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(encoded)) => BASE64.decode(encoded).expect("payload_base64"),
        (None, None) => line.as_bytes().to_vec(),
    };
    let headers: BTreeMap<String, String> = json["headers"]
        .as_object()
        .map(|all| {
            all.iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Received {
        destination: text("topic").unwrap_or_default(),
        key: text("key"),
        message_id: text("message_id")
            .or_else(|| text("id"))
            .unwrap_or_default(),
        headers,
        ..Received::new(payload)
    }
}

/// What the relays it was shown printed, line by line, in the order they were shown.
#[derive(Clone, Default)]
pub struct StdoutConsumer {
    files: Arc<Mutex<Vec<PathBuf>>>,
}

impl StdoutConsumer {
    /// Reads `relay`'s stdout (started with its output to a file) from now on.
    pub fn attach(&self, relay: &Relay) {
        if let Ok(mut files) = self.files.lock() {
            files.push(relay.stdout_path());
        }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<String> {
        let files = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        files
            .iter()
            .flat_map(|file| {
                std::fs::read_to_string(file)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Consumer for StdoutConsumer {
    /// Every complete line printed so far, parsed.
    fn received(&self) -> Vec<Received> {
        let files = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        let mut all = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            // A relay killed mid-write leaves a partial last line.
            let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
            all.extend(complete.lines().filter(|l| !l.is_empty()).map(parse_line));
        }
        all
    }
}

/// Reads the stdout sink's JSON lines from a relay's stdout pipe into `inbox`, on a thread of its
/// own: each line's `payload` field (counting), or each line parsed (keeping).
pub fn read_stdout_lines(stdout: ChildStdout, inbox: Inbox) {
    std::thread::spawn(move || {
        let reader = std::io::BufReader::with_capacity(1 << 20, stdout);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let at = Instant::now();
            const FIELD: &[u8] = b"\"payload\":\"";
            let data = line
                .windows(FIELD.len())
                .position(|w| w == FIELD)
                .map(|p| &line[p + FIELD.len()..])
                .unwrap_or(&[]);
            inbox.arrived(data, at, || parse_line(&String::from_utf8_lossy(&line)));
        }
    });
}
