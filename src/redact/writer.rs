//! The log's writer: each formatted line goes to stderr with the configuration's secrets masked.

use std::io::Write;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

use super::Secrets;

/// Standard error, with [`Secrets`] masked in every log line (text or JSON).
#[derive(Clone)]
pub struct ScrubbedStderr {
    secrets: Arc<Secrets>,
}

impl ScrubbedStderr {
    pub fn new(secrets: Arc<Secrets>) -> ScrubbedStderr {
        ScrubbedStderr { secrets }
    }
}

/// One log line: gathered whole, so that a secret split over two writes is still seen, then
/// masked and written at once.
pub struct Line<'a> {
    secrets: &'a Secrets,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            secrets: &self.secrets,
            buf: Vec::new(),
        }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let line = self.secrets.scrub_bytes(&self.buf);
        let result = std::io::stderr().lock().write_all(&line);
        self.buf.clear();
        result
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            // Nowhere to report a failed write to the log itself.
            let _ = self.flush();
        }
    }
}
