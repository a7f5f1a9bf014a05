//! Writes check results the way `aziotctl check` does: text (sections underlined with dashes,
//! `√`/`‼`/`×` lines, details indented, then the summary counts), one `-o json` document, or a
//! `-o json-stream` of tagged values, one per line, as the checks finish.
//!
//! Both `aziot-tpm check` and the aziotctl wrapper (which also feeds upstream's results through
//! here) use it, so the two outputs cannot drift apart.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::Value;

use super::outcome::{CheckMeta, CheckOutput, CheckResult, CheckResults, StreamEntry};

/// Output format (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    JsonStream,
}

/// How the run went, for the exit code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub ok: usize,
    pub warnings: usize,
    pub skipped: usize,
    pub errors: usize,
    pub fatal: usize,
}

impl Counts {
    pub fn failed(&self) -> bool {
        self.errors + self.fatal > 0
    }
}

pub struct Renderer<W: Write> {
    out: W,
    format: Format,
    verbose: bool,
    warnings_as_errors: bool,
    color: bool,
    counts: Counts,
    checks: BTreeMap<String, CheckOutput>,
    sections: usize,
    stopped: bool,
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

impl<W: Write> Renderer<W> {
    pub fn new(out: W, format: Format, verbose: bool, warnings_as_errors: bool, color: bool) -> Self {
        Renderer {
            out,
            format,
            verbose,
            warnings_as_errors,
            color,
            counts: Counts::default(),
            checks: BTreeMap::new(),
            sections: 0,
            stopped: false,
        }
    }

    /// True once a fatal result was written: nothing after it should run.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn section(&mut self, name: &str) -> io::Result<()> {
        match self.format {
            Format::Text => {
                if self.sections > 0 {
                    writeln!(self.out)?;
                }
                writeln!(self.out, "{name}")?;
                writeln!(self.out, "{}", "-".repeat(name.chars().count()))?;
            }
            Format::JsonStream => self.stream(&StreamEntry::Section { name: name.to_owned() })?,
            Format::Json => {}
        }
        self.sections += 1;
        Ok(())
    }

    pub fn check(&mut self, meta: CheckMeta, mut output: CheckOutput) -> io::Result<()> {
        if self.warnings_as_errors {
            if let CheckResult::Warning { details } = output.result {
                output.result = CheckResult::Error { details };
            }
        }
        if self.format == Format::Text {
            self.text(&meta.description, &output.result)?;
        }
        match &output.result {
            CheckResult::Ok => self.counts.ok += 1,
            CheckResult::Warning { .. } => self.counts.warnings += 1,
            CheckResult::Ignored => {}
            CheckResult::Skipped => self.counts.skipped += 1,
            CheckResult::Error { .. } => self.counts.errors += 1,
            CheckResult::Fatal { .. } => {
                self.counts.fatal += 1;
                self.stopped = true;
            }
        }
        match self.format {
            Format::JsonStream => self.stream(&StreamEntry::Check { meta, output })?,
            Format::Json => {
                self.checks.insert(meta.id, output);
            }
            Format::Text => {}
        }
        Ok(())
    }

    /// Writes the summary (text) or the top-level `additional_info` (JSON), and returns the counts.
    pub fn finish(mut self, additional_info: Value) -> io::Result<Counts> {
        match self.format {
            Format::Text => self.summary()?,
            Format::JsonStream => self.stream(&StreamEntry::AdditionalInfo(additional_info))?,
            Format::Json => {
                let results = CheckResults {
                    additional_info,
                    checks: std::mem::take(&mut self.checks),
                };
                serde_json::to_writer(&mut self.out, &results)?;
                writeln!(self.out)?;
            }
        }
        self.out.flush()?;
        Ok(self.counts)
    }

    fn stream(&mut self, entry: &StreamEntry) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, entry)?;
        writeln!(self.out)?;
        // iotedge shows each check as it arrives.
        self.out.flush()
    }

    fn text(&mut self, description: &str, result: &CheckResult) -> io::Result<()> {
        match result {
            CheckResult::Ok => self.line(GREEN, &format!("\u{221a} {description} - OK")),
            CheckResult::Warning { details } => {
                self.line(YELLOW, &format!("\u{203c} {description} - Warning"))?;
                self.details(YELLOW, details)
            }
            CheckResult::Ignored => Ok(()),
            CheckResult::Skipped if self.verbose => {
                self.line(YELLOW, &format!("\u{203c} {description} - Warning"))?;
                self.line(YELLOW, "    skipping because of previous failures")
            }
            CheckResult::Skipped => Ok(()),
            CheckResult::Error { details } | CheckResult::Fatal { details } => {
                self.line(RED, &format!("\u{00d7} {description} - Error"))?;
                self.details(RED, details)
            }
        }
    }

    fn details(&mut self, color: &str, details: &[String]) -> io::Result<()> {
        let Some((message, causes)) = details.split_first() else {
            return Ok(());
        };
        for line in message.lines() {
            self.line(color, &format!("    {line}"))?;
        }
        if self.verbose {
            for cause in causes {
                for (i, line) in cause.lines().enumerate() {
                    let indent = if i == 0 {
                        "        caused by: "
                    } else {
                        "                   "
                    };
                    self.line(color, &format!("{indent}{line}"))?;
                }
            }
        }
        Ok(())
    }

    fn summary(&mut self) -> io::Result<()> {
        let c = self.counts;
        let more = if self.verbose {
            ""
        } else {
            " Re-run with --verbose for more details."
        };
        if self.sections > 0 {
            writeln!(self.out)?;
        }
        self.line(GREEN, &format!("{} check(s) succeeded.", c.ok))?;
        if c.warnings > 0 {
            self.line(YELLOW, &format!("{} check(s) raised warnings.{more}", c.warnings))?;
        }
        if c.errors + c.fatal > 0 {
            self.line(RED, &format!("{} check(s) raised errors.{more}", c.errors + c.fatal))?;
        }
        if c.skipped > 0 {
            self.line(
                YELLOW,
                &format!(
                    "{} check(s) were skipped due to errors from other checks.{more}",
                    c.skipped
                ),
            )?;
        }
        writeln!(self.out)
    }

    fn line(&mut self, color: &str, text: &str) -> io::Result<()> {
        if self.color {
            writeln!(self.out, "{color}{text}{RESET}")
        } else {
            writeln!(self.out, "{text}")
        }
    }
}

/// Colors only for a terminal, and never with `NO_COLOR` set.
pub fn stdout_wants_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(id: &str, description: &str) -> CheckMeta {
        CheckMeta {
            id: id.into(),
            description: description.into(),
        }
    }

    fn render(format: Format, verbose: bool, warnings_as_errors: bool) -> (String, Counts) {
        let mut out = Vec::new();
        let mut r = Renderer::new(&mut out, format, verbose, warnings_as_errors, false);
        r.section("Configuration checks").unwrap();
        r.check(meta("a", "a is fine"), CheckOutput::new(CheckResult::Ok, json!({})))
            .unwrap();
        r.check(
            meta("b", "b is fine"),
            CheckOutput::new(
                CheckResult::warning("b is odd\nsecond line").caused_by("because"),
                json!({}),
            ),
        )
        .unwrap();
        r.check(
            meta("c", "c is fine"),
            CheckOutput::new(CheckResult::Ignored, json!({})),
        )
        .unwrap();
        r.section("TPM checks").unwrap();
        r.check(
            meta("d", "d is fine"),
            CheckOutput::new(CheckResult::error("d broke"), json!({"x": 1})),
        )
        .unwrap();
        r.check(
            meta("e", "e is fine"),
            CheckOutput::new(CheckResult::Skipped, json!({})),
        )
        .unwrap();
        let counts = r.finish(json!({"now": "t"})).unwrap();
        (String::from_utf8(out).unwrap(), counts)
    }

    #[test]
    fn text_looks_like_aziotctl() {
        let (text, counts) = render(Format::Text, false, false);
        let expected = "Configuration checks\n--------------------\n\
             \u{221a} a is fine - OK\n\
             \u{203c} b is fine - Warning\n    b is odd\n    second line\n\
             \nTPM checks\n----------\n\
             \u{00d7} d is fine - Error\n    d broke\n\
             \n1 check(s) succeeded.\n\
             1 check(s) raised warnings. Re-run with --verbose for more details.\n\
             1 check(s) raised errors. Re-run with --verbose for more details.\n\
             1 check(s) were skipped due to errors from other checks. Re-run with --verbose for more details.\n\n";
        assert_eq!(text, expected);
        assert_eq!(
            counts,
            Counts {
                ok: 1,
                warnings: 1,
                skipped: 1,
                errors: 1,
                fatal: 0
            }
        );
        assert!(counts.failed());
    }

    #[test]
    fn verbose_text_shows_causes_and_skips() {
        let (text, _) = render(Format::Text, true, false);
        assert!(
            text.contains("    b is odd\n    second line\n        caused by: because\n"),
            "{text}"
        );
        assert!(
            text.contains("\u{203c} e is fine - Warning\n    skipping because of previous failures\n"),
            "{text}"
        );
        assert!(text.contains("1 check(s) raised warnings.\n"), "{text}");
    }

    #[test]
    fn warnings_as_errors_turns_warnings_into_errors_everywhere() {
        let (text, counts) = render(Format::Json, false, true);
        assert_eq!(counts.warnings, 0);
        assert_eq!(counts.errors, 2);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["checks"]["b"]["result"]["result"], "error");
        assert_eq!(v["checks"]["c"]["result"], json!({"result": "ignored"}));
        assert_eq!(v["checks"]["d"]["additional_info"], json!({"x": 1}));
        assert_eq!(v["additional_info"], json!({"now": "t"}));
    }

    #[test]
    fn json_stream_is_one_tagged_value_per_line() {
        let (text, _) = render(Format::JsonStream, false, false);
        let kinds: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "section",
                "check",
                "check",
                "check",
                "section",
                "check",
                "check",
                "additional_info"
            ]
        );
    }

    #[test]
    fn a_fatal_result_stops_the_run() {
        let mut out = Vec::new();
        let mut r = Renderer::new(&mut out, Format::Text, false, false, false);
        r.check(
            meta("a", "a"),
            CheckOutput::new(CheckResult::fatal("run as root"), json!({})),
        )
        .unwrap();
        assert!(r.stopped());
        assert!(r.finish(json!({})).unwrap().failed());
    }
}
