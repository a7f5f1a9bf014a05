//! Merging upstream `aziotctl check`'s stream with our results, in upstream's order:
//!
//! * upstream's sections and checks pass through unchanged;
//! * a check we also run (same ID: the config, `*-running` and `configs-up-to-date` checks; and
//!   upstream's `host-connect-dps-endpoint`, which our `dps-endpoint-tls` does with identityd's
//!   trust bundle and proxy) is replaced, in its place, by ours, which reads the configs and
//!   sockets our daemons use. When upstream's own check failed where ours passed, ours becomes a
//!   warning quoting upstream, since upstream skips the checks that depend on it and the admin
//!   must see why;
//! * our other checks close the upstream section of the same name, and a section upstream does
//!   not have ("TPM checks") comes just before the upstream section that follows it in our order;
//! * after a fatal result nothing more is shown, as in aziotctl.

use std::io;

use crate::check::outcome::{CheckMeta, CheckOutput, CheckResult, StreamEntry};
use crate::check::Sink;

/// Our check that stands in for upstream's of another ID (the same test, made the way our
/// daemons connect); without it `iotedge check` shows two DPS TLS checks side by side.
fn ours_for(upstream_id: &str) -> &str {
    match upstream_id {
        "host-connect-dps-endpoint" => "dps-endpoint-tls",
        id => id,
    }
}

fn failure_details(result: &CheckResult) -> Option<Vec<String>> {
    match result {
        CheckResult::Error { details } | CheckResult::Fatal { details } => Some(details.clone()),
        _ => None,
    }
}

/// Ours passed, upstream's failed: a warning that says so, because upstream then skips every
/// check that needs this one ("skipped due to errors from other checks") with no failure shown.
fn upstream_disagrees(id: &str, upstream: &[String]) -> CheckResult {
    let said = upstream.join(": ");
    let fix = if id == "identityd-config-well-formed" && said.contains("registration_id") {
        " Set [provisioning.attestation] registration_id in /etc/aziot/config.toml to the ID `aziot-tpm tpm-info` \
         prints (it prints the whole [provisioning] block) and run `aziot-tpm config apply`."
    } else {
        ""
    };
    CheckResult::warning(format!(
        "our daemons accept this, but upstream's aziotctl does not ({said}), so it skips the checks of \
         aziot-identity-service that depend on it (listed as skipped with --verbose).{fix}"
    ))
}

struct OurSection {
    name: String,
    checks: Vec<(CheckMeta, CheckOutput)>,
    emitted: Vec<bool>,
    /// The header was shown, by upstream or by us.
    shown: bool,
}

impl OurSection {
    fn has_remaining(&self) -> bool {
        self.emitted.iter().any(|e| !e)
    }
}

pub struct Merger<'a, S: Sink> {
    sink: &'a mut S,
    ours: Vec<OurSection>,
    /// Index in `ours` of the upstream section being shown, if we have one of that name.
    current: Option<usize>,
    any_section: bool,
}

impl<'a, S: Sink> Merger<'a, S> {
    pub fn new(sink: &'a mut S, ours: Vec<(String, Vec<(CheckMeta, CheckOutput)>)>) -> Self {
        let ours = ours
            .into_iter()
            .map(|(name, checks)| OurSection {
                name,
                emitted: vec![false; checks.len()],
                checks,
                shown: false,
            })
            .collect();
        Merger {
            sink,
            ours,
            current: None,
            any_section: false,
        }
    }

    /// Takes one value of upstream's stream; returns its `additional_info` when that is what it was.
    pub fn upstream(&mut self, entry: StreamEntry) -> io::Result<Option<serde_json::Value>> {
        match entry {
            StreamEntry::AdditionalInfo(info) => return Ok(Some(info)),
            _ if self.sink.stopped() => {}
            StreamEntry::Section { name } => {
                self.close_current()?;
                let index = self.ours.iter().position(|s| s.name == name);
                if let Some(index) = index {
                    self.show_sections_before(index)?;
                }
                if self.sink.stopped() {
                    return Ok(None);
                }
                self.sink.section(&name)?;
                self.any_section = true;
                if let Some(index) = index {
                    self.ours[index].shown = true;
                }
                self.current = index;
            }
            StreamEntry::Check { meta, output } => match self.find(ours_for(&meta.id)) {
                Some((s, c)) if !self.ours[s].emitted[c] => {
                    // Upstream skips what depends on its config checks; not on the others.
                    let gates = meta.id.ends_with("-config-well-formed");
                    if let Some(failed) = failure_details(&output.result).filter(|_| gates) {
                        let (_, mine) = &mut self.ours[s].checks[c];
                        if !matches!(mine.result, CheckResult::Error { .. } | CheckResult::Fatal { .. }) {
                            mine.result = upstream_disagrees(&meta.id, &failed);
                        }
                    }
                    self.emit(s, c)?
                }
                // Ours was shown already (or stopped before): drop upstream's duplicate.
                Some(_) => {}
                None => self.sink.check(meta, output)?,
            },
        }
        Ok(None)
    }

    /// Shows a check about the merge itself (upstream missing or failing).
    pub fn note(&mut self, meta: CheckMeta, output: CheckOutput) -> io::Result<()> {
        if self.any_section {
            if !self.sink.stopped() {
                self.sink.check(meta, output)?;
            }
        } else if let Some(first) = self.ours.first_mut() {
            first.checks.insert(0, (meta, output));
            first.emitted.insert(0, false);
        }
        Ok(())
    }

    /// Shows what is left of ours once upstream's stream ended.
    pub fn finish(mut self) -> io::Result<()> {
        self.close_current()?;
        self.show_sections_before(self.ours.len())
    }

    fn find(&self, id: &str) -> Option<(usize, usize)> {
        self.ours
            .iter()
            .enumerate()
            .find_map(|(s, section)| section.checks.iter().position(|(m, _)| m.id == id).map(|c| (s, c)))
    }

    fn emit(&mut self, s: usize, c: usize) -> io::Result<()> {
        self.ours[s].emitted[c] = true;
        if self.sink.stopped() {
            return Ok(());
        }
        let (meta, output) = self.ours[s].checks[c].clone();
        self.sink.check(meta, output)
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(s) = self.current.take() {
            self.emit_remaining(s)?;
        }
        Ok(())
    }

    fn emit_remaining(&mut self, s: usize) -> io::Result<()> {
        for c in 0..self.ours[s].checks.len() {
            if !self.ours[s].emitted[c] {
                self.emit(s, c)?;
            }
        }
        Ok(())
    }

    /// Shows, header included, our sections before `end` that upstream has not shown.
    fn show_sections_before(&mut self, end: usize) -> io::Result<()> {
        for s in 0..end {
            if self.sink.stopped() {
                return Ok(());
            }
            if self.ours[s].shown || !self.ours[s].has_remaining() {
                continue;
            }
            self.sink.section(&self.ours[s].name.clone())?;
            self.any_section = true;
            self.ours[s].shown = true;
            self.emit_remaining(s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::outcome::CheckResult;
    use serde_json::json;

    /// Records what reaches the sink, as "# section" and "id:result" lines.
    #[derive(Default)]
    struct Record {
        lines: Vec<String>,
        stopped: bool,
    }

    impl Sink for Record {
        fn section(&mut self, name: &str) -> io::Result<()> {
            self.lines.push(format!("# {name}"));
            Ok(())
        }
        fn check(&mut self, meta: CheckMeta, output: CheckOutput) -> io::Result<()> {
            let result = serde_json::to_value(&output.result).unwrap()["result"]
                .as_str()
                .unwrap()
                .to_owned();
            self.stopped |= result == "fatal";
            self.lines.push(format!("{}:{result}", meta.id));
            Ok(())
        }
        fn stopped(&self) -> bool {
            self.stopped
        }
    }

    fn check(id: &str, result: CheckResult) -> (CheckMeta, CheckOutput) {
        (
            CheckMeta {
                id: id.into(),
                description: id.into(),
            },
            CheckOutput::new(result, json!({})),
        )
    }

    fn ours() -> Vec<(String, Vec<(CheckMeta, CheckOutput)>)> {
        vec![
            (
                "Configuration checks".into(),
                vec![
                    check("keyd-config-well-formed", CheckResult::Ok),
                    check("tpmd-running", CheckResult::Ok),
                ],
            ),
            ("TPM checks".into(), vec![check("tpm-tcti-opens", CheckResult::Ok)]),
            ("Connectivity checks".into(), vec![check("clock-skew", CheckResult::Ok)]),
        ]
    }

    fn upstream_check(id: &str, result: CheckResult) -> StreamEntry {
        let (meta, output) = check(id, result);
        StreamEntry::Check { meta, output }
    }

    fn section(name: &str) -> StreamEntry {
        StreamEntry::Section { name: name.into() }
    }

    #[test]
    fn ours_replace_upstreams_in_place_and_fill_their_sections() {
        let mut sink = Record::default();
        let mut m = Merger::new(&mut sink, ours());
        for entry in [
            section("Configuration checks"),
            upstream_check("keyd-config-well-formed", CheckResult::error("upstream's view")),
            upstream_check("certd-config-well-formed", CheckResult::Ok),
            upstream_check("tpmd-running", CheckResult::error("default socket")),
            section("Connectivity checks"),
            upstream_check("host-connect-iothub-https", CheckResult::warning("no hub")),
        ] {
            assert_eq!(m.upstream(entry).unwrap(), None);
        }
        let info = m.upstream(StreamEntry::AdditionalInfo(json!({"now": "t"}))).unwrap();
        assert_eq!(info, Some(json!({"now": "t"})));
        m.finish().unwrap();
        assert_eq!(
            sink.lines,
            [
                "# Configuration checks",
                // Upstream's config check failed: ours says so, its dependents being skipped.
                "keyd-config-well-formed:warning",
                "certd-config-well-formed:ok",
                "tpmd-running:ok",
                "# TPM checks",
                "tpm-tcti-opens:ok",
                "# Connectivity checks",
                "host-connect-iothub-https:warning",
                "clock-skew:ok",
            ]
        );
    }

    #[test]
    fn our_dps_tls_check_stands_in_for_upstreams_and_a_refused_config_is_quoted() {
        let mut ours = ours();
        ours[0].1.push(check("identityd-config-well-formed", CheckResult::Ok));
        ours[2].1.insert(0, check("dps-endpoint-tls", CheckResult::Ok));
        let mut sink = Record::default();
        let mut m = Merger::new(&mut sink, ours.clone());
        for entry in [
            section("Configuration checks"),
            upstream_check("identityd-config-well-formed", CheckResult::error("missing field `registration_id`")),
            upstream_check("hostname", CheckResult::Skipped),
            section("Connectivity checks"),
            upstream_check("host-connect-dps-endpoint", CheckResult::Ok),
        ] {
            m.upstream(entry).unwrap();
        }
        m.finish().unwrap();
        assert_eq!(
            sink.lines,
            [
                "# Configuration checks",
                "identityd-config-well-formed:warning",
                "hostname:skipped",
                "keyd-config-well-formed:ok",
                "tpmd-running:ok",
                "# TPM checks",
                "tpm-tcti-opens:ok",
                "# Connectivity checks",
                "dps-endpoint-tls:ok",
                "clock-skew:ok",
            ],
            "one DPS TLS check, ours, where upstream's was"
        );
        let said = match upstream_disagrees("identityd-config-well-formed", &["missing field `registration_id`".into()]) {
            CheckResult::Warning { details } => details.join(" "),
            other => panic!("{other:?}"),
        };
        assert!(said.contains("missing field `registration_id`") && said.contains("aziot-tpm tpm-info"), "{said}");
    }

    #[test]
    fn without_upstream_ours_are_shown_alone_with_the_note_first() {
        let mut sink = Record::default();
        let mut m = Merger::new(&mut sink, ours());
        let (meta, output) = check("aziot-identity-service-checks", CheckResult::Ignored);
        m.note(meta, output).unwrap();
        m.finish().unwrap();
        assert_eq!(
            sink.lines,
            [
                "# Configuration checks",
                "aziot-identity-service-checks:ignored",
                "keyd-config-well-formed:ok",
                "tpmd-running:ok",
                "# TPM checks",
                "tpm-tcti-opens:ok",
                "# Connectivity checks",
                "clock-skew:ok",
            ]
        );
    }

    #[test]
    fn an_upstream_fatal_stops_everything_after_it() {
        let mut sink = Record::default();
        let mut m = Merger::new(&mut sink, ours());
        m.upstream(section("Configuration checks")).unwrap();
        m.upstream(upstream_check(
            "certd-config-well-formed",
            CheckResult::fatal("run as root"),
        ))
        .unwrap();
        m.upstream(upstream_check("hostname", CheckResult::Ok)).unwrap();
        m.upstream(section("Connectivity checks")).unwrap();
        m.finish().unwrap();
        assert_eq!(sink.lines, ["# Configuration checks", "certd-config-well-formed:fatal"]);
    }

    #[test]
    fn unknown_upstream_sections_pass_through_and_ours_follow_at_the_end() {
        let mut sink = Record::default();
        let mut m = Merger::new(&mut sink, ours());
        m.upstream(section("Other checks")).unwrap();
        m.upstream(upstream_check("x", CheckResult::Ok)).unwrap();
        m.finish().unwrap();
        assert_eq!(sink.lines[..2], ["# Other checks", "x:ok"]);
        assert_eq!(sink.lines[2], "# Configuration checks");
        assert_eq!(sink.lines.len(), 2 + 3 + 2 + 2);
    }
}
